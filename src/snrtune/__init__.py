"""snrtune: which fine-tuning method wins for this LLM and this dataset?"""

__version__ = "0.1.0"
