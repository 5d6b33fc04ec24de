"""The Hub: Auto-class registration, loading models and adapters, staging for upload, model cards."""
