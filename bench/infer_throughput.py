"""Inference throughput: the CHTC example's infer.py pipeline against `condorml infer`, one run.

Prints images/s of
  * the original pipeline (PIL open, Resize((224, 224)), ToTensor, Normalize, DataLoader with no
    workers, batch 100, the same CNN, softmax, rows written as it goes);
  * condorml's inference loop (`condorml.job.infer.infer`: decoding with one thread per CPU, channels-
    last, --precision auto), for one model and for an ensemble of three;
  * the ceiling 1 / (1/a + 1/b), where a = decoding plus resizing alone (condorml's decoder, one
    thread per CPU) and b = the model alone on ready tensors (condorml's layout and precision),
    since both share the same cores;
and the ratios. Each figure is the best of --repeat runs (noise on a shared machine only ever
slows a run down).

Usage:  python bench/infer_throughput.py [--images 768] [--size 500x375] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from chtc_original import InferDataset
from torch.utils.data import DataLoader

from condorml.job.devices import autocast, job_cpus, keep_freed_memory_for_reuse, resolve_precision
from condorml.job.images import decode_resized
from condorml.job.infer import InferConfig, infer
from condorml.job.models import CatAndDogConvNet
from condorml.job.synth import make_synthetic_dataset, parse_size
from condorml.job.train import TrainConfig, train

BATCH = 100  # the example's
CONDORML_BATCH = InferConfig.__dataclass_fields__["batch_size"].default


def original(images: Path, state_dict: Path, out: Path) -> float:
    """Images/s of the example's infer.py loop."""
    model = CatAndDogConvNet(224)
    model.load_state_dict(torch.load(state_dict, weights_only=True))
    model.eval()
    paths = sorted(str(p) for p in images.iterdir())
    loader = DataLoader(InferDataset(paths), batch_size=BATCH)
    started = time.perf_counter()
    with torch.no_grad(), open(out, "w") as f:
        f.write("fileid,prob\n")
        for x, ids in loader:
            probs = torch.softmax(model(x), dim=1)[:, 1]
            for fileid, prob in zip(ids, probs.tolist(), strict=True):
                f.write(f"{fileid},{prob}\n")
    return len(paths) / (time.perf_counter() - started)


def decode_rate(images: Path) -> float:
    """a: decode + resize alone, one thread per CPU."""
    datas = [p.read_bytes() for p in sorted(images.iterdir())]
    started = time.perf_counter()
    with ThreadPoolExecutor(job_cpus()) as pool:
        list(pool.map(lambda d: decode_resized(d, 224), datas))
    return len(datas) / (time.perf_counter() - started)


def model_rate(precision: str, batch: int, images: int = 1200) -> float:
    """b: the CNN's forward pass alone on ready tensors, in condorml's layout, precision, batch."""
    model = CatAndDogConvNet(224).to(memory_format=torch.channels_last).eval()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x = torch.randn(batch, 3, 224, 224, dtype=dtype).contiguous(memory_format=torch.channels_last)
    batches = max(1, images // batch)
    device = torch.device("cpu")
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(2):
            model(x)
        started = time.perf_counter()
        for _ in range(batches):
            torch.softmax(model(x).float(), dim=1)
    return batches * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=768, help="synthetic test images (default 768)"
    )
    parser.add_argument(
        "--size", default="500x375", help="their nominal size (default 500x375, photo-like)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each measurement; the best counts (default 3)",
    )
    args = parser.parse_args()

    torch.set_num_threads(job_cpus())
    precision = resolve_precision("auto", torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        make_synthetic_dataset(data, n_train=64, n_test=args.images, size=parse_size(args.size))
        # Three small trained members; a bare state_dict of the first for the original pipeline.
        members = []
        for seed in range(3):
            config = TrainConfig(data_dir=data, checkpoint_dir=work / f"m{seed}", epochs=1, seed=seed,
                                 cache_dir=work / "cache", precision="fp32")  # fmt: skip
            train(config)
            members.append(config.checkpoint_dir / "model.pth")
        bare = work / "state_dict.pth"
        torch.save(torch.load(members[0], weights_only=True)["model"], bare)
        print(f"{args.images} test images ({args.size}), batch {BATCH} (original) / {CONDORML_BATCH} "
              f"(condorml), {job_cpus()} CPU thread(s), "
              f"torch {torch.__version__}, condorml precision {precision}")  # fmt: skip

        base = max(original(data / "test", bare, work / "orig.csv") for _ in range(args.repeat))
        keep_freed_memory_for_reuse()  # what the condorml command line does

        def ours(models: list[Path]) -> float:
            config = InferConfig(
                models=tuple(models), images=data / "test", output=work / "dog_probs.csv"
            )
            return infer(config).images_per_s

        one = max(ours(members[:1]) for _ in range(args.repeat))
        three = max(ours(members) for _ in range(args.repeat))
        a = max(decode_rate(data / "test") for _ in range(args.repeat))
        b = max(model_rate(precision, CONDORML_BATCH) for _ in range(args.repeat))
    ceiling = 1 / (1 / a + 1 / b)
    print(f"original infer.py     : {base:7.1f} img/s")
    print(f"condorml infer        : {one:7.1f} img/s (1 model), {three:7.1f} img/s (ensemble of 3, "
          f"{3 * three:7.1f} model-images/s)")  # fmt: skip
    print(f"a decode+resize alone : {a:7.1f} img/s ({job_cpus()} threads)")
    print(
        f"b model alone         : {b:7.1f} img/s (channels-last {precision}, batch {CONDORML_BATCH})"
    )
    print(f"ceiling 1/(1/a+1/b)   : {ceiling:7.1f} img/s")
    print(f"condorml / original   : {one / base:5.2f}x   (target >= 3x)")
    print(f"condorml / ceiling    : {one / ceiling:5.1%}   (target >= 85%)")


if __name__ == "__main__":
    main()
