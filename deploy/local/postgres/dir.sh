# Where the private cluster lives (sourced by start and stop).
DIR="$LT_STATE/postgres"
DATA="$DIR/data"
mkdir -p "$DIR/logs"
