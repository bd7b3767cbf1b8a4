"""Process start-up shared by the commands: flags, logging, multi-host initialisation."""
