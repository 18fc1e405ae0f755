# journal-acks.sh - sourced by the rig scripts that keep a journal of acknowledged writes
# (tests/powerloss.c): acks JOURNAL... prints how many acknowledged writes the journals hold so
# far (32-byte records, kind 2 at offset 4; a missing file counts none).
acks() {
	local f n=0 c
	for f in "$@"; do
		[ -f "$f" ] || continue
		c=$(od -An -v -tu4 -w32 "$f" | awk '$2 == 2 { n++ } END { print n + 0 }')
		n=$((n + c))
	done
	echo "$n"
}
