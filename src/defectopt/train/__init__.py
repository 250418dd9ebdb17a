"""Training: one engine for finetune, distill, QAT and prune recovery; the KD loss."""
