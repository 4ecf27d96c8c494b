#!/usr/bin/env bash
# RTO of a restore of the demo at scale (bench/results/backup.md): generate the demo and a
# scale corpus, optionally add OBJECTS random 512 KiB files to the store, back up, restore into
# an empty database and store, verify; all through the prism command, on an embedded
# PostgreSQL of its own under BENCH_DIR. Usage: SCALE=50000 OBJECTS=2000 bench/backup_restore.sh
set -euo pipefail
W="$(cd "$(dirname "$0")/.." && pwd)"
PY=$W/.venv/bin/python
PRISM=$W/.venv/bin/prism
B=${BENCH_DIR:-/tmp/prism-bench-backup}
SCALE=${SCALE:-20000}
rm -rf $B/src $B/dst $B/backups $B/pg
mkdir -p $B
$PY -c "
from prism.db import embedded; from pathlib import Path; import time, sys
print(embedded.start(Path('$B/pg')), flush=True); time.sleep(10**7)" > $B/url.txt &
HOLDER=$!
echo $HOLDER > $B/holder.pid
for i in $(seq 60); do [ -s $B/url.txt ] && break; sleep 1; done
BASE=$(head -1 $B/url.txt)
SRC=$($PY -c "from sqlalchemy.engine import make_url; print(make_url('$BASE').set(database='bench_src').render_as_string(False))")
DST=$($PY -c "from sqlalchemy.engine import make_url; print(make_url('$BASE').set(database='bench_dst').render_as_string(False))")
$PY -c "
import asyncio, asyncpg
from sqlalchemy.engine import make_url
async def main():
    c = await asyncpg.connect(make_url('$BASE').set(database='postgres', drivername='postgresql').render_as_string(False))
    for d in ('bench_src', 'bench_dst'):
        await c.execute(f'DROP DATABASE IF EXISTS {d}')
        await c.execute(f'CREATE DATABASE {d}')
    await c.close()
asyncio.run(main())"
export PRISM_ENCRYPTION_KEY=$(openssl rand -hex 32) PRISM_BACKUP_URL=$B/backups PRISM_LOG_LEVEL=WARNING
export PRISM_LIFECYCLE_INTERVAL_HOURS=0
echo "== uptime before"; uptime
echo "== demo --scale $SCALE"
/usr/bin/time -f "demo: %e s wall, %M KiB max RSS" env PRISM_DATABASE_URL=$SRC PRISM_DATA_DIR=$B/src $PRISM demo --scale $SCALE > $B/demo.out 2> $B/demo.err || { tail $B/demo.err; exit 1; }
tail -2 $B/demo.err
$PY -c "
import asyncio, asyncpg
async def main():
    c = await asyncpg.connect('$SRC'.replace('+asyncpg',''))
    print('source database:', await c.fetchval('SELECT pg_size_pretty(pg_database_size(current_database()))'))
    for t in ('documents','document_sections','analysis_results','user_feedback','audit_logs'):
        print(t, await c.fetchval(f'SELECT count(*) FROM {t}'))
    await c.close()
asyncio.run(main())"
OBJECTS=${OBJECTS:-0}
if [ "$OBJECTS" -gt 0 ]; then
  echo "== $OBJECTS files of 512 KiB (random) added to the source store"
  $PY -c "
import os
from pathlib import Path
root = Path('$B/src/objects/org/00000000-0000-0000-0000-00000000beef/documents')
root.mkdir(parents=True, exist_ok=True)
for i in range($OBJECTS):
    (root / f'{i:06d}').write_bytes(os.urandom(512 * 1024))"
  du -sb $B/src/objects
fi
echo "== uptime"; uptime
echo "== backup create"
/usr/bin/time -f "create: %e s wall, %M KiB max RSS" env PRISM_DATABASE_URL=$SRC PRISM_DATA_DIR=$B/src $PRISM backup create 2>&1 | tail -3
du -sb $B/backups
echo "== uptime"; uptime
echo "== backup restore (empty database bench_dst, empty store $B/dst/objects)"
/usr/bin/time -f "restore: %e s wall, %M KiB max RSS" env PRISM_DATABASE_URL=$DST PRISM_DATA_DIR=$B/dst $PRISM backup restore --json 2>&1 | tail -3
echo "== uptime"; uptime
echo "== backup verify"
/usr/bin/time -f "verify: %e s wall, %M KiB max RSS" env PRISM_DATABASE_URL=$SRC PRISM_DATA_DIR=$B/src $PRISM backup verify --json 2>&1 | $PY -c "import sys,json; t=sys.stdin.read(); i=t.index('{'); d=json.loads(t[i:t.rindex('}')+1]); print('verify ok', d['ok'], 'objects', d['objectsChecked']); print(t[t.rindex('}')+1:].strip())"
echo "== uptime after"; uptime
kill $HOLDER
