# Settings for a throwaway benchmark server: every abuse limit raised out
# of the way and password hashing made cheap, so thousands of users can be
# registered in seconds. Production defaults are untouched; these only
# apply to servers started by the bench scripts.
export CONFAB_SERVER_LOG_LEVEL=warn
export CONFAB_LIMITS_MESSAGES_PER_SEC=1000000
export CONFAB_LIMITS_MESSAGES_BURST=1000000
export CONFAB_LIMITS_FRAMES_PER_SEC=1000000
export CONFAB_LIMITS_FRAMES_BURST=1000000
export CONFAB_LIMITS_MAX_CONNECTIONS=19900
export CONFAB_LIMITS_MAX_CONNECTIONS_PER_IP=100000
export CONFAB_LIMITS_AUTH_ATTEMPTS_PER_IP_PER_MIN=100000000
export CONFAB_LIMITS_ROOM_CREATIONS_PER_HOUR=100000000
export CONFAB_AUTH_ARGON2_MEMORY_KIB=8
export CONFAB_AUTH_ARGON2_ITERATIONS=1
export CONFAB_AUTH_ARGON2_PARALLELISM=1
