-- wrk script for GET runs: only the report hook (the path is in the URL).
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
