"""The demo world (`world.py`) and the models trained on it, committed beside this file."""

from pathlib import Path

DEMO_CLIP = Path(__file__).resolve().parent / "model"  # `razor demo train`
DEMO_VLM = Path(__file__).resolve().parent / "vlm"  # `razor demo train-vlm`
DEMO_SD = Path(__file__).resolve().parent / "sd"  # `razor demo train-sd`
DEMO_SD3 = Path(__file__).resolve().parent / "sd3"  # `razor demo train-sd3`
