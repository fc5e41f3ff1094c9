"""Deployment helpers of TreeLoRA-Fed: certificates, SuperNode keys, process-overhead benchmark (see README.md)."""
