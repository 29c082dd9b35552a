"""Reusable tools: the CUDA check (gpu_check.sh), its log-likelihood comparison, target and refusal measurements."""
