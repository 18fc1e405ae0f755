/*
 * log.h - Cohort logging: levels, a replaceable sink, and the COH_LOG_* macros.
 *
 * Every message carries its level, the function and the line. The macros check the level before
 * they evaluate their arguments, so a disabled message costs one load and one compare, and they
 * preserve errno so that logging on an error path never clobbers the error being reported.
 * COH_LOG_DBG compiles away entirely unless COHORT_DEBUG is defined, so it is safe on fast paths.
 * The default sink writes one line per message to stderr; an application replaces it with
 * coh_log_set_sink(). What this file does not do: rate limiting and per-node prefixes (the
 * engine adds those on top).
 */
#ifndef COHORT_LOG_H
#define COHORT_LOG_H

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

enum coh_log_level {
	COH_LOG_LEVEL_ERR = 0,
	COH_LOG_LEVEL_WARN = 1,
	COH_LOG_LEVEL_INFO = 2,
	COH_LOG_LEVEL_DBG = 3,
};

/**
 * coh_log_sink_fn - receives one formatted message.
 * @ctx: the pointer given to coh_log_set_sink()
 * @level: the message's level
 * @func: the function that logged it
 * @line: the line that logged it
 * @msg: the formatted message, NUL-terminated, without a trailing newline
 *
 * May be called from any thread, concurrently; the sink does its own locking.
 */
typedef void (*coh_log_sink_fn)(void *ctx, enum coh_log_level level, const char *func, int line,
				const char *msg);

/**
 * coh_log_set_sink - replace the log sink.
 * @fn: the new sink, or NULL to restore the default stderr sink
 * @ctx: passed to @fn on every call
 *
 * Call it before any other thread logs; it is not synchronised against concurrent logging.
 */
void coh_log_set_sink(coh_log_sink_fn fn, void *ctx);

/**
 * coh_log_set_level - set the most verbose level that is emitted (default COH_LOG_LEVEL_WARN,
 * or the value of the COHORT_LOG_LEVEL environment variable, 0-3, read at the first message).
 * Any thread may call it.
 */
void coh_log_set_level(enum coh_log_level level);

/** coh_log_level_get - the current level. Any thread may call it. */
enum coh_log_level coh_log_level_get(void);

/**
 * coh_log_msg - format and emit a message; use the COH_LOG_* macros instead.
 * Preserves errno.
 */
void coh_log_msg(enum coh_log_level level, const char *func, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define COH_LOG_AT(lvl, fmt, ...)                                                                  \
	do {                                                                                       \
		if ((int)(lvl) <= (int)coh_log_level_get())                                        \
			coh_log_msg((lvl), __func__, __LINE__, fmt, ##__VA_ARGS__);                \
	} while (0)

#define COH_LOG_ERR(fmt, ...) COH_LOG_AT(COH_LOG_LEVEL_ERR, fmt, ##__VA_ARGS__)
#define COH_LOG_WARN(fmt, ...) COH_LOG_AT(COH_LOG_LEVEL_WARN, fmt, ##__VA_ARGS__)
#define COH_LOG_INFO(fmt, ...) COH_LOG_AT(COH_LOG_LEVEL_INFO, fmt, ##__VA_ARGS__)
#ifdef COHORT_DEBUG
#define COH_LOG_DBG(fmt, ...) COH_LOG_AT(COH_LOG_LEVEL_DBG, fmt, ##__VA_ARGS__)
#else
#define COH_LOG_DBG(fmt, ...)                                                                      \
	do {                                                                                       \
		if (0)                                                                             \
			coh_log_msg(COH_LOG_LEVEL_DBG, __func__, __LINE__, fmt, ##__VA_ARGS__);    \
	} while (0)
#endif

#ifdef __cplusplus
}
#endif

#endif /* COHORT_LOG_H */
