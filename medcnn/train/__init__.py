"""Training: datasets, masked Dice+CE loss, augmentation, the loop and distributed training."""

from medcnn.train.datasets import Case, PreparedCase, kfold_split, load_cases, load_csv_manifest, load_dataset_json
from medcnn.train.losses import DiceCELoss, masked_dice_ce_loss, region_dice_bce_loss
from medcnn.train.loop import (DataConfig, OptimConfig, PreprocessConfig, TrainConfig, TrainResult, load_checkpoint,
                               save_checkpoint, train)

__all__ = ["Case", "PreparedCase", "kfold_split", "load_cases", "load_csv_manifest", "load_dataset_json",
           "DiceCELoss", "masked_dice_ce_loss", "region_dice_bce_loss", "DataConfig", "OptimConfig", "PreprocessConfig", "TrainConfig",
           "TrainResult", "load_checkpoint", "save_checkpoint", "train"]
