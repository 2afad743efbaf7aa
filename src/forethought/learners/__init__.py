"""M-step learners: fine-tune a model on the E-step's accepted samples (SFT here; preference learners beside it)."""
