"""read_model_sync: consume order events and project them into the read model."""
