"""The child every CLI benchmark step runs in (bench_scale, bench_backup, bench_bigdir).

Owns: running the CLI exactly as ``python -m usenetsync_cli`` does, in a fresh
``python3 -c`` child, and writing its exit code, wall time, peak RSS (its own
``VmHWM``) and CPU time as JSON to the file named by its first argument:

    subprocess.run([sys.executable, "-c", CLI, result_json, *cli_args], ...)
"""

CLI = r"""
import json, resource, sys, time
out = sys.argv[1]
sys.argv = ["usenetsync", *sys.argv[2:]]
t0 = time.perf_counter()
code = 0
try:
    from usenetsync_cli.entry import main
    main()
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
finally:
    hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    r = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as f:
        json.dump({"code": code, "wall_s": time.perf_counter() - t0, "peak_rss": hwm,
                   "cpu_s": r.ru_utime + r.ru_stime}, f)
sys.exit(code)
"""
