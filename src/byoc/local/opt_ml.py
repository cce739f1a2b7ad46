"""/opt/ml for a local training job, written as SageMaker writes it for each host, and the data
folder checked before any container starts.

byoc.training.contract reads what this writes; byoc.training.data owns the data layout, and the
check here is its pre-flight subset (folder names only), so the host needs no torch. On the
host a job is laid out under one folder:

    OUTPUT/model/            algo-1's /opt/ml/model (the job's model)
    OUTPUT/output/           algo-1's /opt/ml/output (data/metrics.json, failure, tensorboard/)
    OUTPUT/checkpoints/      /opt/ml/checkpoints of every host (the default --checkpoints)
    OUTPUT/hosts/algo-N/     each host's input/config/*.json, and model/ and output/ of hosts 2..N
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from byoc.core import training_config
from byoc.core.data_layout import SPLIT_DIR_NAMES, split_folder, splits_root
from byoc.core.errors import DataError
from byoc.core.training_config import CHANNEL

INSTANCE_TYPE = "local"
WEIGHTS = "weights"  # the channel of pretrained weights (byoc.training.train.weights_file)


def host_names(count: int) -> list[str]:
    return [f"algo-{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class HostDirs:
    """One host's folders on this machine, and where they go in its container."""

    host: str
    config: Path
    model: Path
    output: Path

    def volumes(self, data: Path, checkpoints: Path, weights: Path | None = None) -> dict[str, dict[str, str]]:
        """The SDK's `volumes`: this host's /opt/ml, the data read-only as the training channel, and a
        pretrained weights file, read-only, alone in the `weights` channel."""
        volumes = {
            str(self.config): {"bind": "/opt/ml/input/config", "mode": "rw"},
            str(data): {"bind": f"/opt/ml/input/data/{CHANNEL}", "mode": "ro"},
            str(self.model): {"bind": "/opt/ml/model", "mode": "rw"},
            str(self.output): {"bind": "/opt/ml/output", "mode": "rw"},
            str(checkpoints): {"bind": "/opt/ml/checkpoints", "mode": "rw"},
        }
        if weights is not None:
            volumes[str(weights)] = {"bind": f"/opt/ml/input/data/{WEIGHTS}/{weights.name}", "mode": "ro"}
        return volumes


def check_data(root: Path) -> None:
    """DataError unless `root` holds train/, valid/ and test/ folders of class folders (or one
    folder that does, as an unpacked archive has it: dogImages/train/...)."""
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder")
    root = splits_root(root)
    missing = [split for split in SPLIT_DIR_NAMES if split_folder(root, split) is None]
    if missing:
        raise DataError(
            f"--data {root}: no {', '.join(f'{m}/' for m in missing)} folder. Expected train/, valid/ and "
            "test/, each holding one folder per class (train/001.Affenpinscher/*.jpg, the dogImages layout)"
        )
    for split in SPLIT_DIR_NAMES:
        folder = split_folder(root, split)
        assert folder is not None
        if not any(p.is_dir() and any(p.iterdir()) for p in folder.iterdir()):
            raise DataError(f"--data: {folder} has no class folders with images (e.g. {folder}/001.cat/1.jpg)")


def lay_out(
    output: Path, hosts: list[str], hyperparameters: dict[str, str], interface: str, weights: bool = False
) -> list[HostDirs]:
    """Every host's folders under `output`, with its three config files (the `weights` channel among the
    channels when the job has one); empty model/ and output/, as a SageMaker job starts with."""
    channels = (CHANNEL, WEIGHTS) if weights else (CHANNEL,)
    dirs = []
    for host in hosts:
        own = output / "hosts" / host
        first = host == hosts[0]
        found = HostDirs(
            host=host,
            config=own / "input" / "config",
            model=output / "model" if first else own / "model",
            output=output / "output" if first else own / "output",
        )
        for folder in (found.config, found.model, found.output / "data"):
            folder.mkdir(parents=True, exist_ok=True)
        documents = training_config.documents(host, hosts, hyperparameters, INSTANCE_TYPE, interface, channels)
        for name, text in documents.items():
            (found.config / name).write_text(text)
        dirs.append(found)
    return dirs
