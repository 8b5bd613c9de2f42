#!/usr/bin/env bash
# How long a run is held up when PostgreSQL goes away mid-run, with the
# default settings (outage_retry 30s, instance_lease 30s).
#
#   scripts/db-blip.sh [BLIP]    BLIP: restart (pg_ctl restart -m fast, the
#                                default), or a number of seconds stopped
#
# Three daemons share a run of N recipients (N=3000, fake WeChat at 20 ms)
# started by `wxpush send daily --again`; when a third is accepted the
# database goes away for BLIP. Prints the run's wall time, the time from the
# database being back to the run done, the same run's time without a blip
# (run first, on a fresh database), and every recipient's count (exactly one
# `sent` each, or the script says who was not). Needs the PostgreSQL server
# binaries (Debian's postgresql) and builds the release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
blip=${1:-restart}
n=${N:-3000}
cargo build --release --locked --bin wxpush >&2
cargo build --release --locked -p fake-wechat >&2
bin=$PWD/target/release
pgbin=$(dirname "$(readlink -f "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")")
work=$(mktemp -d)
chmod 755 "$work"
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/pg" "$work/pglog"
if [ ${#as_pg[@]} -gt 0 ]; then chown postgres "$work/pg" "$work/pglog"; fi
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust --no-sync >/dev/null
port=$((20000 + RANDOM % 10000))
pg() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -o "-p $port -h 127.0.0.1 -k /tmp -c fsync=off" -l "$work/pg/../pglog/pg.log" -w "$@" >/dev/null; }
pg start
psql() { "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -tA "$@"; }

FAKE_LATENCY_MS=20 "$bin/fake-wechat" 127.0.0.1:0 >"$work/fake.url" 2>/dev/null &
pids+=($!)
while [ ! -s "$work/fake.url" ]; do sleep 0.05; done
api=$(cat "$work/fake.url")

measure() { # DB BLIP: prints "total back_to_done"
    local db=$1 what=$2 conf=$work/$1.toml
    psql -c "CREATE DATABASE $db" >/dev/null
    {
        printf '[wechat]\nappid = "wx0123456789abcdef"\napi_base = "%s"\n' "$api"
        printf '[database]\nurl = "postgres://postgres@127.0.0.1:%s/%s"\n' "$port" "$db"
        printf '[http]\nenabled = false\n[delivery]\nconcurrency = 4\n'
        printf '[[jobs]]\nname = "daily"\ncron = "0 0 9 * * *"\ntemplate_id = "t"\nconsent = "unchecked"\n[jobs.data]\nthing1 = "hi"\n'
        for i in $(seq 1 "$n"); do
            printf '[[recipients]]\nopenid = "oUser%023d"\njobs = ["daily"]\n' "$i"
        done
    } >"$conf"
    export WXPUSH__WECHAT__SECRET=test-secret RUST_LOG=warn
    local d=()
    for _ in 1 2 3; do
        "$bin/wxpush" --config "$conf" run 2>>"$work/daemons.log" &
        d+=($!)
        pids+=($!)
    done
    sleep 1
    local start back
    start=$(date +%s.%N)
    ("$bin/wxpush" --config "$conf" send daily --again >"$work/send.out" 2>>"$work/send.log" || true) &
    local send=$!
    if [ "$what" != none ]; then
        until [ "$(psql -d "$db" -c "SELECT COUNT(*) FROM deliveries WHERE status = 'sent'" 2>/dev/null || echo 0)" -ge $((n / 3)) ]; do
            sleep 0.02
        done
        if [ "$what" = restart ]; then
            pg restart -m fast
        else
            pg stop -m fast
            sleep "$what"
            pg start
        fi
    fi
    back=$(date +%s.%N)
    until [ "$(psql -d "$db" -c "SELECT status FROM runs WHERE id = 1" 2>/dev/null)" = done ]; do
        sleep 0.05
    done
    local done_at
    done_at=$(date +%s.%N)
    wait "$send" || true
    kill "${d[@]}" 2>/dev/null || true
    wait "${d[@]}" 2>/dev/null || true
    local sent twice unknown
    sent=$(psql -d "$db" -c "SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
    unknown=$(psql -d "$db" -c "SELECT COUNT(*) FROM deliveries WHERE status = 'unknown'")
    twice=$(psql -d "$db" -c "SELECT COUNT(*) FROM (SELECT openid FROM deliveries GROUP BY openid HAVING COUNT(*) > 1) x")
    echo "$(echo "$done_at - $start" | bc) $(echo "$done_at - $back" | bc) $sent $unknown $twice"
}

read -r base _ base_sent _ _ < <(measure base none)
read -r total after sent unknown twice < <(measure blip "$blip")
printf 'N=%s, three daemons, blip=%s\n' "$n" "$blip"
printf '  without a blip: %.2f s (%s sent)\n' "$base" "$base_sent"
printf '  with it:        %.2f s, %.2f s from the database back to the run done\n' "$total" "$after"
printf '  held up by:     %.2f s\n' "$(echo "$total - $base" | bc)"
printf '  sent %s, unknown %s, openids with two deliveries %s\n' "$sent" "$unknown" "$twice"
