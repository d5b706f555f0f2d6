"""Training: the run config (pydantic, `config.py`), matched baselines (`models.py`), the AdamW recipe
(`optim.py`), atomic checkpoints (`checkpoint.py`), the `Trainer` (one CPU to many GPUs with torchrun) and the
`save_pretrained` folder a run ends with (`pretrained.py`)."""

from .checkpoint import latest_checkpoint, load_checkpoint
from .config import ConfigError, RunConfig, load_run_config
from .models import BASELINES, build_model, count_params, model_names
from .pretrained import FINAL_FOLDER, save_pretrained_folder
from .trainer import NonFiniteError, Trainer

__all__ = [
    "BASELINES",
    "FINAL_FOLDER",
    "ConfigError",
    "NonFiniteError",
    "RunConfig",
    "Trainer",
    "build_model",
    "count_params",
    "latest_checkpoint",
    "load_checkpoint",
    "load_run_config",
    "model_names",
    "save_pretrained_folder",
]
