"""The Stable Diffusion family (METHOD.md §6–7): UnlearnCanvas metrics on generated images."""
