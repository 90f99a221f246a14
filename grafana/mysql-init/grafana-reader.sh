#!/bin/bash
# Run once by the mysql image's entrypoint (/docker-entrypoint-initdb.d) on a fresh volume: a read-only
# account for Grafana's MySQL data source. SELECT on the app database only; no writes, no other schemas.
set -euo pipefail
mysql --protocol=socket -uroot -p"${MYSQL_ROOT_PASSWORD}" <<SQL
CREATE USER IF NOT EXISTS 'grafana_reader'@'%' IDENTIFIED BY '${GRAFANA_MYSQL_PASSWORD}';
GRANT SELECT ON \`${MYSQL_DATABASE}\`.* TO 'grafana_reader'@'%';
FLUSH PRIVILEGES;
SQL
