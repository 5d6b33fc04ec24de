"""Parameter-efficient fine-tuning of TempMe: any peft method (`apply_peft`, `apply_lora`), and the bottleneck
adapters and deep prompts peft has no method for (`apply_adapter`, `apply_prompt`, as peft-style adapters).
The methods are alternatives: each refuses a model that already has a tuner (`one_tuner.require_untuned`)."""
