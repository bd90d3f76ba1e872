# Sourced by the bench scripts: the limits a load generator on one machine
# needs raised on the servers it starts.
# Its own registrations, and many devices per user (`idle`), logging in
# many at once from one address (attempts are counted until the password
# is checked, across every node of a cluster).
export MISSIVE_LIMITS__REGISTRATIONS_PER_IP_MAX=10000000
export MISSIVE_LIMITS__LOGIN_FAILURES_MAX=10000000
export MISSIVE_LIMITS__DEVICES_PER_ACCOUNT_MAX=1000
# All the load comes from a few 127.0.0.x addresses: many connections per
# address and per account, and `drain` reconnects 10,000 devices at once
# (more than 1,000 not yet authenticated per address).
export MISSIVE_LIMITS__CONNECTIONS_PER_ACCOUNT_MAX=1000
export MISSIVE_LIMITS__CONNECTIONS_PER_IP_MAX=1000000
export MISSIVE_LIMITS__UNAUTHENTICATED_PER_IP_MAX=1000000
# The load is the point: no send rate limits.
export MISSIVE_LIMITS__SENDS_PER_SEC_PER_DEVICE=0
export MISSIVE_LIMITS__SENDS_PER_SEC_PER_ACCOUNT=0
ulimit -n "$(ulimit -Hn)"
