"""``yungu agent``: the node agent (samples, buffers on disk, sends to the platform)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

from yungu.adapters.config import load_catalogue
from yungu.adapters.telemetry.agent import Agent, AgentConfig, default_node_id
from yungu.cli.output import console, fail
from yungu.engines.energy.power import PowerModel

app = typer.Typer(
    help="Node agent: CPU/memory/GPU/power telemetry / 节点采集代理", invoke_without_command=True
)


@app.callback()
def run(
    url: str = typer.Option(
        "http://127.0.0.1:8600", "--url", envvar="YUNGU_URL", help="platform URL / 平台地址"
    ),
    node_key: str = typer.Option(
        ..., "--node-key", envvar="YUNGU_NODE_KEY", help="node key from `POST /telemetry/nodes` / 节点密钥"
    ),
    node_id: str = typer.Option(None, "--node-id", help="node id (default: hostname) / 节点 ID"),
    state_dir: Path = typer.Option(
        Path("~/.yungu/agent"), "--state-dir", help="on-disk buffer / 本地缓冲目录"
    ),
    interval: float = typer.Option(
        1.0, "--interval", min=0.01, help="seconds between samples / 采样间隔（秒）"
    ),
    batch: int = typer.Option(5000, "--batch", min=1, max=5000, help="samples per request / 每批样本数"),
    send_interval: float = typer.Option(
        10.0, "--send-interval", min=0.0, help="seconds between sends / 上报间隔（秒）"
    ),
    cpu_model: str = typer.Option(
        "cpu-xeon-8480", "--cpu-model", help="catalogue entry for the CPU power model / CPU 功耗模型"
    ),
    cpu_fraction: float = typer.Option(
        0.0, "--cpu-fraction", help="share of that node this machine is (0: cores/112) / 占整机比例"
    ),
    gpu_model: str = typer.Option(
        "", "--gpu-model", help="catalogue entry of the GPUs (idle power) / GPU 型号"
    ),
    job: list[str] = typer.Option([], "--job", help="JOB_ID=PID to meter (repeatable) / 计量的作业"),
    duration: float = typer.Option(
        0.0, "--duration", help="stop after N seconds (0: run until Ctrl-C) / 运行时长"
    ),
) -> None:
    """Sample this node and send its telemetry (buffered on disk while the platform is down).

    采集本节点遥测数据并上报；平台不可达时写入本地缓冲，恢复后补发，不丢不重。
    """
    import psutil

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cat = load_catalogue()
    if cpu_model not in cat:
        fail(f"unknown CPU model {cpu_model!r} / 未知 CPU 型号", f"known: {', '.join(sorted(cat.entries))}")
    frac = cpu_fraction or min(1.0, (psutil.cpu_count() or 1) / 112)
    jobs: dict[str, int] = {}
    for j in job:
        name, _, pid = j.partition("=")
        if not pid.isdigit():
            fail(f"--job expects JOB_ID=PID, got {j!r} / 格式应为 JOB_ID=PID")
        jobs[name] = int(pid)
    cfg = AgentConfig(
        api_url=url,
        node_id=node_id or default_node_id(),
        node_key=node_key,
        state_dir=state_dir.expanduser(),
        interval_s=interval,
        batch=batch,
        send_interval_s=send_interval,
        cpu_model=PowerModel.from_spec(cat.get(cpu_model), fraction=frac),
        gpu_model=PowerModel.from_spec(cat.get(gpu_model)) if gpu_model else None,
        jobs=jobs,
    )
    agent = Agent(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    method = "RAPL (measured)" if agent.rapl else f"model {cpu_model} x {frac:.3f} (modelled)"
    gpus = f"{len(agent.nvml.handles)} GPU via NVML" if agent.nvml and agent.nvml.available else "no GPU/NVML"
    console.print(
        f"agent {cfg.node_id} -> {url}: CPU power by {method}; {gpus}; buffer {cfg.state_dir} ({len(agent.buffer)} pending)"
    )
    try:
        agent.run(duration_s=duration or None, stop=stop)
    except KeyboardInterrupt:
        agent.flush(max_batches=1000, force=True)
    finally:
        console.print(
            f"sent {agent.sent} samples, {len(agent.buffer)} still buffered / 已发送 {agent.sent}，缓冲剩余 {len(agent.buffer)}"
        )
        agent.close()
