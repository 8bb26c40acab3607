#!/usr/bin/env bash
# Apache Kafka 4.4.0 for the tests: one node in KRaft mode (broker and controller), on this
# machine, with nothing else to install but Java 17 and Maven.
#
#   tests/kafka/start.sh fetch                      fetch the jars once (reused when present)
#   tests/kafka/start.sh start DIR [HOST [PORT [CONTROLLER_PORT]]]
#                                                   format DIR (unless already formatted) and start
#                                                   a broker there; prints its address
#   tests/kafka/start.sh stop DIR                   stop it cleanly (SIGTERM, then SIGKILL after 30 s)
#   tests/kafka/start.sh groups DIR ARGS...         kafka-consumer-groups against it
#
# DIR holds server.properties, the data (data/), the log (kafka.log), the process id (pid)
# and the address (brokers). A DIR that was started before keeps its data: start it again to
# restart the broker on the same storage. HOST defaults to 127.0.0.1, PORT and CONTROLLER_PORT
# to free ports below the kernel's ephemeral range (Linux's default is 32768-60999): a port from
# that range may be given to some client's outgoing connection while the broker is down, and a
# restart on the same address would then find it taken. The jars are cached in $EMOSTREAM_KAFKA_HOME (default
# ~/.cache/emostream/kafka-4.4.0), outside the work tree.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
home=${EMOSTREAM_KAFKA_HOME:-$HOME/.cache/emostream/kafka-4.4.0}
libs=$home/libs
heap=${EMOSTREAM_KAFKA_HEAP:-512m}

die() { echo "kafka: $*" >&2; exit 1; }

fetch() {
  if [ -f "$libs/.complete" ]; then return; fi
  command -v java >/dev/null || die "needs Java 17 (apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "needs Maven (apt-get install maven)"
  mkdir -p "$libs"
  echo "kafka: fetching Apache Kafka 4.4.0's jars into $libs" >&2
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime >&2 \
    || die "mvn could not fetch org.apache.kafka:kafka_2.13:4.4.0"
  touch "$libs/.complete"
}

free_port() {
  python3 - <<'PY'
import random, socket
for port in random.sample(range(20000, 32000), 12000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("kafka: no free port between 20000 and 32000 on 127.0.0.1")
PY
}

java_cp() { java -Xmx"$heap" -cp "$libs/*" "$@"; }

start() {
  local dir=${1:?usage: start DIR [HOST [PORT [CONTROLLER_PORT]]]} host=${2:-127.0.0.1} port=${3:-}
  local controller=${4:-}
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    die "a broker already runs in $dir (pid $(cat "$dir/pid"))"
  fi
  if [ ! -f "$dir/server.properties" ]; then
    port=${port:-$(free_port)}
    controller=${controller:-$(free_port)}
    [ "$controller" != "$port" ] || controller=$(free_port)
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$controller
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$controller
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
    cat >"$dir/log4j2.properties" <<PROPS
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/kafka.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.apache.name=org.apache.kafka
logger.apache.level=WARN
PROPS
    echo "$host:$port" >"$dir/brokers"
  fi
  # A new DIR, or one whose data/ was removed (a broker that lost its disk): a fresh log.
  if [ ! -f "$dir/data/meta.properties" ]; then
    java_cp kafka.tools.StorageTool format -t "$(java_cp kafka.tools.StorageTool random-uuid)" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; die "cannot format $dir/data"; }
  fi
  local brokers
  brokers=$(cat "$dir/brokers")
  host=${brokers%:*}
  port=${brokers##*:}
  # The log is appended to across restarts: only what this start writes says it is up.
  local logged=0
  [ -f "$dir/kafka.log" ] && logged=$(wc -l <"$dir/kafka.log")
  nohup java -Xmx"$heap" -Xms128m -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" >>"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 240); do
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      tail -20 "$dir/stdout.log" "$dir/kafka.log" >&2 2>/dev/null || true
      die "the broker exited at start; its log: $dir/kafka.log"
    fi
    if awk -v from="$logged" 'NR > from && /Kafka Server started/ { up = 1; exit } END { exit !up }' \
      "$dir/kafka.log" 2>/dev/null \
      && (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
      echo "kafka: Apache Kafka 4.4.0 at $brokers (pid $(cat "$dir/pid")); log: $dir/kafka.log" >&2
      echo "$brokers"
      return
    fi
    sleep 0.25
  done
  die "the broker did not answer on $brokers within 60 s; its log: $dir/kafka.log"
}

stop() {
  local dir=${1:?usage: stop DIR}
  [ -f "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

groups() {
  local dir=${1:?usage: groups DIR ARGS...}
  shift
  fetch
  java_cp org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    --bootstrap-server "$(cat "$dir/brokers")" "$@"
}

command=${1:-}
shift || true
case "$command" in
  fetch) fetch ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  groups) groups "$@" ;;
  *) die "usage: tests/kafka/start.sh fetch | start DIR [HOST [PORT]] | stop DIR | groups DIR ARGS..." ;;
esac
