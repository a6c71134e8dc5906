"""GPU energy check (issue 4): a real torch matmul job under the agent on an NVIDIA GPU.

    python bench/gpu_energy_check.py [--seconds 60] [--gpu 0] [--pattern steady|bursty]

Reference: NVML's total-energy counter (mJ since driver load; Volta and newer) read when
the job's process starts and when it exits. Compared with:

- the job's energy as Yungu reports it: the agent's 1 Hz samples (power, utilisation and
  the energy counter per GPU) attributed by ``yungu.engines.energy.attribution.attribute``,
  the same code the platform runs on ingested samples;
- naive power sampling, ``nvmlDeviceGetPowerUsage`` integrated with the trapezoid rule at
  1 Hz and at 10 Hz over the same window (what tools without the counter do).

Needs torch with CUDA and nvidia-ml-py; exits 2 with a message where there is no GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yungu.adapters.telemetry.agent import Agent, AgentConfig
from yungu.adapters.telemetry.sensors import Nvml
from yungu.engines.energy.attribution import attribute
from yungu.engines.energy.integrate import trapezoid_joules
from yungu.engines.energy.power import PowerModel

JOB = """
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.time() + {seconds}
n = 0
while time.time() < end:
    for _ in range({burst}):
        c = a @ b
    torch.cuda.synchronize()
    n += {burst}
    time.sleep({pause})
print(f"matmuls={{n}} tflops={{n * 2 * 8192**3 / {seconds} / 1e12:.0f}}")
"""
# steady: back-to-back matmuls; bursty: ~30 ms of matmuls then 70 ms idle, the pattern
# (training steps with data loading / communication gaps) where sampled power misleads.
PATTERNS = {"steady": {"burst": 20, "pause": 0.0}, "bursty": {"burst": 20, "pause": 0.07}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--pattern", choices=sorted(PATTERNS), default="steady")
    a = ap.parse_args()
    nv = Nvml()
    if not nv.available or nv.energy_j(a.gpu) is None:
        print("no NVIDIA GPU with an energy counter here: nothing to check")
        raise SystemExit(2)
    state = Path(tempfile.mkdtemp())
    agent = Agent(AgentConfig(api_url="http://127.0.0.1:9", node_id="gpu-node", node_key="-", state_dir=state,
                              gpu_model=PowerModel(70.0, 700.0), job_gpus={"gpu-check": (a.gpu,)}))
    fast: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample_power() -> None:  # naive sampling, 10 Hz
        while not stop.is_set():
            fast.append((time.time(), nv.power_w(a.gpu)))
            time.sleep(0.1 - (time.time() % 0.1))

    samples = [agent.sample()]
    sampler = threading.Thread(target=sample_power, daemon=True)
    sampler.start()
    time.sleep(0.5)
    e_start, t_start = nv.energy_j(a.gpu), time.time()
    job = subprocess.Popen([sys.executable, "-c", JOB.format(seconds=a.seconds, **PATTERNS[a.pattern])],
                           env={**os.environ, "YUNGU_JOB_ID": "gpu-check", "CUDA_VISIBLE_DEVICES": str(a.gpu)},
                           stdout=subprocess.PIPE, text=True)
    agent.cfg.jobs["gpu-check"] = job.pid
    next_t = time.time() + 1.0
    while job.poll() is None:
        time.sleep(max(0.0, next_t - time.time()))
        next_t += 1.0
        samples.append(agent.sample())
    e_end, t_end = nv.energy_j(a.gpu), time.time()
    samples.append(agent.sample())
    time.sleep(0.3)
    stop.set()
    sampler.join()
    out = job.stdout.read().strip() if job.stdout else ""
    assert e_start is not None and e_end is not None
    reference = e_end - e_start
    energy = attribute(samples)
    agent_j = energy.jobs["gpu-check"].gpu_dynamic_j + energy.jobs["gpu-check"].gpu_idle_j
    window = [(t, p) for t, p in fast if t_start - 0.15 <= t <= t_end + 0.15]
    naive10 = trapezoid_joules(window, t_start, t_end)
    naive1 = trapezoid_joules(window[::10], t_start, t_end)
    print(f"\npattern {a.pattern}; GPU {a.gpu}: {nv.names[a.gpu]}; job ran {t_end - t_start:.1f} s ({out}); agent samples: {len(samples)}\n")
    print("| method | energy J | mean W | vs NVML counter |")
    print("|---|---:|---:|---:|")
    dur = t_end - t_start
    for name, j in (("NVML total-energy counter delta (reference)", reference),
                    ("Yungu agent + attribution (counter-based, 1 Hz samples)", agent_j),
                    ("naive power sampling, 10 Hz", naive10),
                    ("naive power sampling, 1 Hz", naive1)):
        print(f"| {name} | {j:,.0f} | {j / dur:,.1f} | {100 * (j - reference) / reference:+.2f} % |")
    ok = abs(agent_j - reference) / reference < 0.01
    print(f"\nagent within 1 % of the counter: {'yes' if ok else 'NO'}")
    agent.close()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
