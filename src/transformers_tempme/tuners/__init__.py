"""Parameter-efficient fine-tuning of TempMe (LoRA through peft)."""
