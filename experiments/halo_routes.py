"""Which simulation gives the 2024 halo paper's tracers most cheaply: mass functions and mass edges per route.

The paper's four input channels close at cumulative number densities 1e-4, 1e-3, 2e-3 and
3e-3 (h/Mpc)^3 of halos and subhalos ranked by mass; in CosmicGrowth (0.59 Mpc/h particles,
a high-resolution N-body code) those ranks sit at log10 M = 13.30, 12.56, 12.31 and 12.17
(Msun/h), below a heaviest halo of 15.01. A route is a way to make such tracers with
fastpm and FOF: a particle spacing, a force mesh (in units of the particle grid), a number
of steps and FOF settings. Each route simulates the same box (same seed and size) with
`velnet simulate --cache` and finds its halos with `velnet halos --cache`, both timed as
separate processes (wall time and the peak resident memory of the largest process); then
the halos are ranked as the paper ranks them (`data_prep.halo_fields.mass_bins`) and the
edges compared with the paper's. A route fills the channels when it has halos of at least
`nmin` particles down to 3e-3; it passes when every edge below the heaviest halo lies
within 0.1 dex of the paper's (the heaviest depends on the volume, not the route).

The paper ranks halos and subhalos together; FOF finds host halos only. The edges of the
FOF host mass function of Watson et al. (2013; colossus, the same cosmology and redshift) are
the most a host catalogue can reach, so each route is also compared with them: a route
"matches hosts" when every edge lies within 0.1 dex of theirs. Where no route passes against
the paper, the cheapest route that matches hosts is the one to use, and the gap that remains
is the subhalos'.

    python -m experiments.halo_routes --out runs/halo-routes
    python -m experiments.halo_routes --out runs/x --set 'routes={"1.0-B2-10": {...}}'

Writes `routes.json` (every number) and `routes.md` (the table and the verdict) and
`mass-functions.png` (n(>M) of each route against the paper's four points) in `--out`.
"""
import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from experiments import with_overrides

log = logging.getLogger("experiments.halo_routes")

PAPER_EDGES = (15.01, 13.30, 12.56, 12.31, 12.17)
"""log10 M (Msun/h) of the paper's heaviest halo and of the lightest of each channel."""
TOLERANCE_DEX = 0.1

CONFIG = {
    "box_size": 128.0,      # Mpc/h: 2.1e6 (Mpc/h)^3, 210 halos above 1e-4 and 6,300 above 3e-3
    "redshift": 0.59,
    "seed": 1,
    "ranks": 2,             # mpirun -n ranks for the simulations and FOF
    # name -> particle spacing (Mpc/h), force mesh B, steps, FOF linking length b, fewest particles
    # (and a subhalo model)
    "routes": {
        "1.0-B2-10": {"spacing": 1.0, "force_mesh": 2, "steps": 10, "linking_length": 0.2, "nmin": 20},
        "1.0-B2-10-n10": {"spacing": 1.0, "force_mesh": 2, "steps": 10, "linking_length": 0.2, "nmin": 10},
        "1.0-B2-10-b0.25": {"spacing": 1.0, "force_mesh": 2, "steps": 10, "linking_length": 0.25, "nmin": 10},
        "1.0-B2-20": {"spacing": 1.0, "force_mesh": 2, "steps": 20, "linking_length": 0.2, "nmin": 10},
        "1.0-B2-20-b0.25": {"spacing": 1.0, "force_mesh": 2, "steps": 20, "linking_length": 0.25, "nmin": 10},
        "1.0-B3-10": {"spacing": 1.0, "force_mesh": 3, "steps": 10, "linking_length": 0.2, "nmin": 10},
        "1.0-B3-20": {"spacing": 1.0, "force_mesh": 3, "steps": 20, "linking_length": 0.2, "nmin": 10},
        "1.0-B3-20-b0.25": {"spacing": 1.0, "force_mesh": 3, "steps": 20, "linking_length": 0.25, "nmin": 10},
        "1.0-B4-30": {"spacing": 1.0, "force_mesh": 4, "steps": 30, "linking_length": 0.2, "nmin": 10},
        "0.8-B2-10": {"spacing": 0.8, "force_mesh": 2, "steps": 10, "linking_length": 0.2, "nmin": 20},
        "0.59-B2-10": {"spacing": 1200 / 2048, "force_mesh": 2, "steps": 10, "linking_length": 0.2,
                       "nmin": 20},
        # the hosts of two routes above with satellites drawn onto their particles (data_prep.subhalos)
        "1.0-B2-10-n10-han16": {"spacing": 1.0, "force_mesh": 2, "steps": 10, "linking_length": 0.2, "nmin": 10,
                                "subhalos": "han16"},
        "1.0-B2-10-n10-han16-infall": {"spacing": 1.0, "force_mesh": 2, "steps": 10, "linking_length": 0.2,
                                       "nmin": 10, "subhalos": "han16-infall"},
        "1.0-B2-10-b0.25-han16": {"spacing": 1.0, "force_mesh": 2, "steps": 10, "linking_length": 0.25,
                                  "nmin": 10, "subhalos": "han16"},
        "1.0-B2-10-b0.25-han16-infall": {"spacing": 1.0, "force_mesh": 2, "steps": 10, "linking_length": 0.25,
                                         "nmin": 10, "subhalos": "han16-infall"},
    },
}


def timed(argv, ranks):
    """Run a velnet command in its own process(es); return (wall seconds, peak RSS of the largest, GB, CPU seconds
    of all its processes: user + system, which a busy machine inflates far less than wall time)."""
    command = [sys.executable, "-m", "velnet.cli", *map(str, argv)]
    if ranks > 1:
        command = ["mpirun", "-n", str(ranks), "--bind-to", "none", *command]
    log.info("$ %s", shlex.join(command))
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"failed ({process.returncode}): {shlex.join(command)}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024**2, usage.ru_utime + usage.ru_stime


def particles_of(config, route):
    """Particles per side of a route's box."""
    return int(round(config["box_size"] / route["spacing"]))


def run_route(out, config, name, route, hosts):
    """Simulate (cached), find halos (cached) and measure one route; returns its record (also written)."""
    record_path = out / "routes" / f"{name}.json"
    halos = out / "halos" / f"{name}.h5"
    hosts = None if route.get("subhalos") else hosts  # a host mass function says nothing of subhalos
    if record_path.exists():  # measured before: its cost stays, its statistics are measured again
        record = {key: value for key, value in json.loads(record_path.read_text()).items()
                  if key not in ("host_offsets_dex", "matches_hosts")}
        return {**record, **measure(halos, hosts)}
    from data_prep.cache import halos_file, is_complete_simulation, simulation_folder
    from data_prep.simulate import SimulationConfig

    sim_config = SimulationConfig.from_preset(
        "halo2024", box_size=config["box_size"], nparticles=particles_of(config, route),
        force_mesh=route["force_mesh"], steps=route["steps"], seed=config["seed"],
        output_redshifts=(config["redshift"],))
    sim_cached = is_complete_simulation(simulation_folder(sim_config))
    sim = out / "sims" / name
    wall_sim, rss_sim, cpu_sim = timed(["simulate", "--preset", "halo2024", "--box", config["box_size"], "--particles",
                               sim_config.nparticles, "--force-mesh", route["force_mesh"], "--steps",
                               route["steps"], "--seed", config["seed"], "--z", config["redshift"], "--cache",
                               "--out", sim], config["ranks"])
    snapshot = sim / f"snapshot_z{config['redshift']:.3f}"
    subhalos = route.get("subhalos")
    halos_cached = halos_file(snapshot, route["linking_length"], route["nmin"], subhalos).is_file()
    wall_fof, rss_fof, cpu_fof = timed(["halos", snapshot, "--linking-length", route["linking_length"], "--nmin",
                                        route["nmin"], *(["--subhalos", subhalos] if subhalos else []), "--cache",
                                        "--out", halos], config["ranks"])
    sim_record = json.loads((sim / "config.json").read_text())
    record = {"route": route, "particles": sim_config.nparticles, **measure(halos, hosts),
              "cost": {"simulation_s": sim_record["timings_s"]["total"], "ranks": sim_record["nranks"],
                       "simulation_peak_gb": None if sim_cached else round(rss_sim, 2),
                       "simulation_cpu_s": None if sim_cached else round(cpu_sim, 1),
                       "fof_cpu_s": None if halos_cached else round(cpu_fof, 1),
                       "fof_s": None if halos_cached else round(wall_fof, 1),
                       "fof_peak_gb": None if halos_cached else round(rss_fof, 2)}}
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def host_edges(config, model="watson13", mdef="fof"):
    """log10 M (Msun/h) at the paper's four number densities of a theoretical host mass function (colossus).

    Args:
        config: the study's config (its redshift); the cosmology is the 2024 paper's.
        model, mdef: colossus's mass function model and mass definition (Watson et al. 2013, FOF b = 0.2).
    """
    from colossus.cosmology import cosmology
    from colossus.lss import mass_function

    from data_prep.halo_fields import NUMBER_DENSITIES
    from velnet.physics.cosmology import HALO2024

    c = HALO2024
    cosmology.setCosmology("velnet-halo2024", {"flat": True, "H0": 100 * c.h, "Om0": c.Omega_m, "Ob0": c.Omega_b,
                                               "sigma8": c.sigma8, "ns": c.n_s})
    ln_mass = np.linspace(np.log(1e10), np.log(1e16), 600)
    per_ln = mass_function.massFunction(np.exp(ln_mass), config["redshift"], mdef=mdef, model=model, q_out="dndlnM")
    cumulative = np.cumsum((per_ln * np.gradient(ln_mass))[::-1])[::-1]
    return [round(float(np.interp(-n, -cumulative, ln_mass / np.log(10))), 3) for n in NUMBER_DENSITIES]


def measure(halos_path, hosts=None):
    """Number density, mass edges and the cumulative mass function of a halo catalogue."""
    import warnings

    from data_prep.catalogs import load_halos
    from data_prep.halo_fields import NUMBER_DENSITIES, mass_bins

    catalog = load_halos(halos_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bins = mass_bins(catalog.mass, catalog.volume)
    edges = np.log10(bins.edges)
    filled = bool(len(catalog) >= round(NUMBER_DENSITIES[-1] * catalog.volume))
    offsets = edges[1:] - np.array(PAPER_EDGES[1:])
    grid = np.arange(11.5, 15.01, 0.05)
    cumulative = [(float(m), float(np.sum(catalog.mass >= 10**m) / catalog.volume)) for m in grid]
    out = {"halos": len(catalog), "number_density": len(catalog) / catalog.volume,
           "particle_mass": catalog.attrs.get("particle_mass"),
           "log10_edges": [round(float(e), 3) for e in edges],
           "offsets_dex": [round(float(o), 3) for o in offsets], "filled": filled,
           "passes": filled and bool(np.all(np.abs(offsets) <= TOLERANCE_DEX)),
           "cumulative": cumulative}
    if hosts is not None:
        host_offsets = edges[1:] - np.array(hosts)
        out["host_offsets_dex"] = [round(float(o), 3) for o in host_offsets]
        out["matches_hosts"] = filled and bool(np.all(np.abs(host_offsets) <= TOLERANCE_DEX))
    return out


def table(records, hosts):
    """The markdown table of the routes, cheapest first."""
    rows = ["| route | particles | B | steps | b | nmin | subhalos | n (h/Mpc)^3 | log10 edges (paper 15.01 / 13.30 / "
            f"12.56 / 12.31 / 12.17; FOF hosts {' / '.join(f'{e:.2f}' for e in hosts)}) | worst offset from the "
            "paper / the hosts (dex) | fastpm s | FOF s | fastpm peak GB | passes / matches hosts |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(records.items(), key=lambda item: cost(item[1])):
        route, c = r["route"], r["cost"]
        host_worst = f"{max(r['host_offsets_dex'], key=abs):+.2f}" if "host_offsets_dex" in r else "-"
        worst = f"{max(r['offsets_dex'], key=abs):+.2f} / {host_worst}" if r["filled"] else "not filled"
        matches = {True: "yes", False: "no", None: "-"}[r.get("matches_hosts")]
        rows.append(f"| {name} | {r['particles']}^3 | {route['force_mesh']} | {route['steps']} | "
                    f"{route['linking_length']} | {route['nmin']} | {route.get('subhalos') or '-'} | "
                    f"{r['number_density']:.2e} | "
                    f"{' / '.join(f'{e:.2f}' for e in r['log10_edges'])} | "
                    f"{worst} | {c['simulation_s']:.0f} | "
                    f"{'cached' if c['fof_s'] is None else c['fof_s']} | "
                    f"{'cached' if c['simulation_peak_gb'] is None else c['simulation_peak_gb']} | "
                    f"{'yes' if r['passes'] else 'no'} / {matches} |")
    return "\n".join(rows)


def cost(record):
    """CPU seconds of a route's box (simulation wall time x ranks, plus FOF)."""
    return record["cost"]["simulation_s"] * record["cost"]["ranks"] + (record["cost"]["fof_s"] or 0.0)


def figure(records, hosts, path):
    """n(>M) of every route against the paper's four points and the FOF host mass function's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (name, r) in enumerate(records.items()):
        m, n = np.array(r["cumulative"]).T
        ax.semilogy(m, np.where(n > 0, n, np.nan), ls=("-", "--", ":")[i // 10 % 3], label=name)
    ax.plot(PAPER_EDGES[1:], (1e-4, 1e-3, 2e-3, 3e-3), "ko", label="paper (CosmicGrowth, halos + subhalos)")
    ax.plot(hosts, (1e-4, 1e-3, 2e-3, 3e-3), "ks", mfc="none", label="FOF hosts, Watson et al. 2013")
    ax.set_xlabel("log10 M (Msun/h)")
    ax.set_ylabel("n(>M) (h/Mpc)^3")
    ax.set_ylim(3e-5, 2e-2)
    ax.set_xlim(11.6, 14.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out, config=CONFIG):
    """Measure every route of `config` into `out`; return the routes' records."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hosts = host_edges(config)
    records = {name: run_route(out, config, name, route, hosts) for name, route in config["routes"].items()}
    by_cost = sorted(records.items(), key=lambda item: cost(item[1]))
    passing = [name for name, r in by_cost if r["passes"]]
    matching = [name for name, r in by_cost if r.get("matches_hosts")]
    verdict = (f"The cheapest route that fills all four channels within {TOLERANCE_DEX} dex of the paper's edges: "
               f"**{passing[0]}**." if passing else
               f"No route fills all four channels within {TOLERANCE_DEX} dex of the paper's edges. "
               + (f"The cheapest that matches the FOF host mass function within {TOLERANCE_DEX} dex: "
                  f"**{matching[0]}**." if matching else "None matches the FOF host mass function either."))
    (out / "routes.json").write_text(json.dumps({"config": config, "host_edges": hosts, "routes": records,
                                                 "passing": passing, "matching_hosts": matching}, indent=1) + "\n")
    (out / "routes.md").write_text(
        f"# Halo routes: {config['box_size']:g} Mpc/h, z = {config['redshift']}, seed {config['seed']}, "
        f"{config['ranks']} ranks\n\n{table(records, hosts)}\n\n{verdict}\n")
    figure(records, hosts, out / "mass-functions.png")
    print(table(records, hosts))
    print(verdict)
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/halo-routes", help="study folder")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="override CONFIG entries")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(args.out, with_overrides(CONFIG, args.set, p.error))


if __name__ == "__main__":
    main()
