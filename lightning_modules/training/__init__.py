"""Recovery after pruning: a short distillation of the unpruned model into a pruned arm (``fit``)."""
