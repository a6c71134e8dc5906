"""CPU-job energy against a known load: a busy loop on one core, metered by the real agent code.

    python bench/energy_accuracy.py [--seconds 20]

Method: RAPL package counters where readable (measured), otherwise the catalogue power model
(modelled). The "known" energy is what the method itself predicts for the load we impose
(the loop's own CPU seconds, reported by the loop itself, x (TDP - idle) / cores, with the
catalogue node scaled to this machine's cores); the error is the agent's end-to-end figure
(psutil process-tree CPU time sampled at 1 Hz -> Kepler attribution by CPU-time share)
against that. With RAPL the reference is the same CPU-time share of the measured package
dynamic energy, so the figure isolates attribution error, not sensor error.
Baseline in the same run: naive attribution (the whole node's power to the job).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from yungu.adapters.config import load_catalogue
from yungu.adapters.telemetry.agent import Agent, AgentConfig
from yungu.engines.energy.attribution import attribute
from yungu.engines.energy.power import PowerModel


def burn(seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1
    q.put(time.process_time())  # the loop's own CPU time: the independent reference


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    cores = psutil.cpu_count() or 1
    model = PowerModel.from_spec(load_catalogue().get("cpu-xeon-8480"), fraction=min(1.0, cores / 112))
    with tempfile.TemporaryDirectory() as d:
        agent = Agent(
            AgentConfig("http://127.0.0.1:9", "bench", "k", Path(d), interval_s=1.0, cpu_model=model)
        )
        q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        p = mp.Process(target=burn, args=(a.seconds, q))
        p.start()
        agent.cfg.jobs = {"busy": p.pid}
        samples = []
        t_start = time.time()
        while p.is_alive():
            samples.append(agent.sample())
            time.sleep(1.0)
        own_cpu = q.get(timeout=10)
        p.join()
        samples.append(agent.sample())
        elapsed = time.time() - t_start
        agent.close()
    job_samples = [s for s in samples if s.jobs]
    ne = attribute(job_samples)
    je = ne.jobs.get("busy")
    got = je.total_j if je else 0.0
    span = job_samples[-1].ts - job_samples[0].ts
    method = "RAPL (measured)" if samples[0].cpu_method.value == "measured" else "model (modelled)"
    # The model's prediction for this load: each CPU-second of the loop costs (TDP - idle) / cores J.
    expected_dyn = (model.dynamic_range_w / cores) * own_cpu
    naive = ne.total_j
    err = (got - expected_dyn) / expected_dyn if expected_dyn else float("nan")
    print(f"{'measure':<46} {'value':>12}")
    print(f"{'machine cores / load avg (1 min)':<46} {cores:>6} / {psutil.getloadavg()[0]:.2f}")
    print(f"{'method':<46} {method:>12}")
    print(f"{'busy-loop span metered (s)':<46} {span:>12.1f}   (wall {elapsed:.1f})")
    print(f"{'busy loop own CPU seconds (reference)':<46} {own_cpu:>12.2f}")
    print(f"{'expected job energy for that CPU time (J)':<46} {expected_dyn:>12.1f}")
    print(f"{'agent job energy (J)':<46} {got:>12.1f}")
    print(f"{'error vs expected':<46} {err * 100:>11.2f}%")
    print(
        f"{'baseline: whole-node energy to the job (J)':<46} {naive:>12.1f}   ({(naive - expected_dyn) / expected_dyn * 100:+.0f}% error)"
    )


if __name__ == "__main__":
    main()
