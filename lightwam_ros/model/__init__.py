"""The Light-WAM network in torch, with parameter names that load the official checkpoints."""
