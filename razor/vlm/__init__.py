"""RAZOR on LLaVA-style VLMs: the task's question sets and losses, the step-search probe, the
frozen answer cache and the metrics (forget accuracy, utility, after quantisation too)."""
