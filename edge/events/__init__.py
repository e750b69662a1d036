"""Events: the durable log, the `facesleuth events` command, the MQTT bridge."""
