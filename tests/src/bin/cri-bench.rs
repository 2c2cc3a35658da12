//! CRI pod-start bench, amphi vs runc on one private containerd with both runtime handlers
//! (run by `bench/cri.sh`, which documents the environment variables).
//!
//! 1. pod start, sequential: RunPodSandbox + CreateContainer + StartContainer of one busybox
//!    `sleep` until ContainerStatus says RUNNING; N runs per handler, interleaved; median.
//! 2. burst: 20 pods started at once (one CRI connection per pod); pods per second = 20 / time
//!    until the last one runs.
//!
//! Pods are removed (StopPodSandbox + RemovePodSandbox) after each measurement, untimed.

use amphi_tests::cri::{self, container_config, v1, CriClient};
use amphi_tests::cri_env::{AMPHI_HANDLER, RUNC_HANDLER};
use amphi_tests::images::{self, BUSYBOX};
use amphi_tests::{Containerd, Version};
use anyhow::{Context, Result};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Bench {
    cd: Containerd,
    cri: CriClient,
    cgroup_parent: String,
}

impl Bench {
    fn pod_config(&self, name: &str) -> v1::PodSandboxConfig {
        let log_dir = self.cd.dir.join("pods").join(name);
        let _ = std::fs::create_dir_all(&log_dir);
        cri::pod_config(name, &format!("uid-{name}"), &log_dir, &self.cgroup_parent)
    }
}

/// One pod start on `client`; returns (elapsed, pod id).
fn start_pod(
    client: &CriClient,
    cfg: &v1::PodSandboxConfig,
    handler: &str,
) -> Result<(Duration, String, [f64; 3])> {
    let ctr = container_config("sleep", BUSYBOX, &["sleep", "3600"], &[]);
    let t = Instant::now();
    let pod = client
        .run_pod_sandbox(cfg, handler)
        .with_context(|| format!("RunPodSandbox ({handler})"))?;
    let t_pod = t.elapsed();
    let id = client
        .create_container(
            cri::Sandbox {
                id: &pod,
                config: cfg,
            },
            &ctr,
        )
        .with_context(|| format!("CreateContainer ({handler})"))?;
    let t_create = t.elapsed();
    client
        .start_container(&id)
        .with_context(|| format!("StartContainer ({handler})"))?;
    loop {
        let st = client.container_status(&id)?;
        if st.state == v1::ContainerState::ContainerRunning as i32 {
            break;
        }
        anyhow::ensure!(
            st.state != v1::ContainerState::ContainerExited as i32,
            "container exited: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let total = t.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((
        total,
        pod,
        [ms(t_pod), ms(t_create - t_pod), ms(total - t_create)],
    ))
}

fn remove_pod(client: &CriClient, pod: &str) -> Result<()> {
    client.stop_pod_sandbox(pod)?;
    client.remove_pod_sandbox(pod)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// `n` pods started at once with `handler`; returns (wall time until the last runs, each pod's time).
fn burst(b: &Bench, handler: &'static str, n: usize, round: usize) -> Result<(Duration, Vec<f64>)> {
    let addr = b.cd.address();
    let clients: Vec<CriClient> = (0..n)
        .map(|_| CriClient::connect(&addr))
        .collect::<Result<_>>()?;
    let cfgs: Vec<v1::PodSandboxConfig> = (0..n)
        .map(|i| b.pod_config(&format!("burst-{handler}-{round}-{i}")))
        .collect();
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    for (client, cfg) in clients.into_iter().zip(cfgs) {
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(
            move || -> Result<(CriClient, Duration, String)> {
                barrier.wait();
                let (d, pod, _) = start_pod(&client, &cfg, handler)?;
                Ok((client, d, pod))
            },
        ));
    }
    barrier.wait();
    let t = Instant::now();
    let mut results = Vec::new();
    let mut first_err = None;
    for h in handles {
        match h
            .join()
            .map_err(|_| anyhow::anyhow!("burst thread panicked"))?
        {
            Ok(r) => results.push(r),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let wall = t.elapsed();
    let each: Vec<f64> = results
        .iter()
        .map(|(_, d, _)| d.as_secs_f64() * 1000.0)
        .collect();
    // Remove in parallel too (untimed).
    let removers: Vec<_> = results
        .into_iter()
        .map(|(client, _, pod)| std::thread::spawn(move || remove_pod(&client, &pod)))
        .collect();
    for r in removers {
        r.join()
            .map_err(|_| anyhow::anyhow!("remove thread panicked"))??;
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok((wall, each))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    amphi_tests::require_root();
    let runs = env_usize("BENCH_RUNS", 20);
    let warmup = env_usize("BENCH_WARMUP", 3);
    let burst_n = env_usize("BENCH_BURST", 20);
    let burst_rounds = env_usize("BENCH_BURST_ROUNDS", 3);
    let version = match std::env::var("BENCH_CONTAINERD")
        .as_deref()
        .unwrap_or("2.1")
    {
        "1.6" => Version::V1_6,
        "1.7" => Version::V1_7,
        "2.1" => Version::V2_1,
        other => anyhow::bail!("BENCH_CONTAINERD must be 1.6, 1.7 or 2.1, not {other}"),
    };
    let out_dir = std::env::var("BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| amphi_tests::paths::workspace_root().join("target/bench"));
    std::fs::create_dir_all(&out_dir)?;

    let cd = Containerd::start_cri(version)?;
    let cri_client = CriClient::connect(&cd.address())?;
    images::import_busybox(&cd)?;
    cri::wait_image(&cri_client, BUSYBOX)?;
    cri::wait_image(&cri_client, amphi_tests::cri_env::PAUSE_IMAGE)?;
    let cgroup_parent = cd.cri.as_ref().unwrap().cgroup_parent.clone();
    let b = Bench {
        cd,
        cri: cri_client,
        cgroup_parent,
    };
    let handlers = [AMPHI_HANDLER, RUNC_HANDLER];

    eprintln!("cri-bench: containerd {}, {runs} runs per handler (warmup {warmup}), burst {burst_n} pods x {burst_rounds}", version.label());
    for i in 0..warmup {
        for h in handlers {
            let (_, pod, _) = start_pod(&b.cri, &b.pod_config(&format!("warm-{h}-{i}")), h)?;
            remove_pod(&b.cri, &pod)?;
        }
    }
    let mut seq: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // Per phase: RunPodSandbox, CreateContainer, StartContainer (+ status until RUNNING).
    let mut phases: [[Vec<f64>; 3]; 2] = Default::default();
    for i in 0..runs {
        // Interleave, alternating who goes first.
        let order: [usize; 2] = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let h = handlers[k];
            let (d, pod, ph) = start_pod(&b.cri, &b.pod_config(&format!("seq-{h}-{i}")), h)?;
            seq[k].push(d.as_secs_f64() * 1000.0);
            for (j, v) in ph.into_iter().enumerate() {
                phases[k][j].push(v);
            }
            remove_pod(&b.cri, &pod)?;
        }
    }
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut burst_each: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for r in 0..burst_rounds {
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let (wall, each) = burst(&b, handlers[k], burst_n, r)?;
            rates[k].push(burst_n as f64 / wall.as_secs_f64());
            burst_each[k].extend(each);
        }
    }

    let med = [median(&mut seq[0].clone()), median(&mut seq[1].clone())];
    let p90 = [percentile(&seq[0], 0.9), percentile(&seq[1], 0.9)];
    let rate = [median(&mut rates[0].clone()), median(&mut rates[1].clone())];
    let bmed = [
        median(&mut burst_each[0].clone()),
        median(&mut burst_each[1].clone()),
    ];
    let ratio = med[0] / med[1];
    println!();
    println!("CRI pod start (RunPodSandbox + CreateContainer + StartContainer until RUNNING), containerd {}", version.label());
    let pm = |k: usize, j: usize| median(&mut phases[k][j].clone());
    let rows = [
        (
            format!("pod start, median of {runs} (ms)"),
            med[0],
            med[1],
            ratio,
        ),
        (
            "  RunPodSandbox, median (ms)".to_string(),
            pm(0, 0),
            pm(1, 0),
            pm(0, 0) / pm(1, 0),
        ),
        (
            "  CreateContainer, median (ms)".to_string(),
            pm(0, 1),
            pm(1, 1),
            pm(0, 1) / pm(1, 1),
        ),
        (
            "  StartContainer until RUNNING, median (ms)".to_string(),
            pm(0, 2),
            pm(1, 2),
            pm(0, 2) / pm(1, 2),
        ),
        (
            "pod start, p90 (ms)".to_string(),
            p90[0],
            p90[1],
            p90[0] / p90[1],
        ),
        (
            format!("{burst_n} pods at once: pods/s (median of {burst_rounds})"),
            rate[0],
            rate[1],
            rate[0] / rate[1],
        ),
        (
            format!("{burst_n} pods at once: per-pod median (ms)"),
            bmed[0],
            bmed[1],
            bmed[0] / bmed[1],
        ),
    ];
    println!(
        "| {:<46} | {:>8} | {:>8} | {:>10} |",
        "metric", "amphi", "runc", "amphi/runc"
    );
    println!(
        "|{}|{}:|{}:|{}:|",
        "-".repeat(48),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(11)
    );
    for (label, a, r, x) in rows {
        println!(
            "| {label:<46} | {a:>8.1} | {r:>8.1} | {:>10} |",
            format!("{x:.2}x")
        );
    }
    println!();
    println!(
        "goal: pod start <= 0.50x runc: {}",
        if ratio <= 0.50 { "MET" } else { "NOT MET" }
    );
    let summary = serde_json::json!({
        "containerd": version.label(),
        "runs": runs,
        "pod_start_ms": {"amphi": seq[0], "runc": seq[1]},
        "pod_start_median_ms": {"amphi": med[0], "runc": med[1]},
        "pod_start_ratio": ratio,
        "burst_pods": burst_n,
        "burst_pods_per_s": {"amphi": rates[0], "runc": rates[1]},
        "burst_per_pod_ms": {"amphi": burst_each[0], "runc": burst_each[1]},
    });
    let path = out_dir.join("cri.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
    eprintln!("cri-bench: wrote {}", path.display());
    leftover_check(&b)?;
    Ok(())
}

/// Every pod the bench made must be gone.
fn leftover_check(b: &Bench) -> Result<()> {
    let pods = b.cri.list_pod_sandboxes()?;
    anyhow::ensure!(pods.is_empty(), "pods left after the bench: {}", pods.len());
    Ok(())
}
