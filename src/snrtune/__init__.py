"""snrtune: which fine-tuning method wins for this LLM and this dataset?"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes warns at import, on CPUs with AVX512-BF16, that the optional `kernels` package is missing (it falls
# back to its own CPU kernels): noise before every one-line error and in every DAG build, never the user's fault.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
