/*
 * imap_parser — incremental, bounded tokenizer for IMAP client commands
 * (RFC 9051 / RFC 3501 syntax) as received before login.
 *
 * It does no I/O and keeps its state between calls, so input may arrive one
 * byte at a time. It never echoes or keeps more than its limits allow. It
 * knows nothing about what commands mean, but for the size bounds of ID
 * (RFC 2971 section 3.3), which must be applied while its line comes in:
 * ID's strings and pairs are bounded, not its line, which may be longer
 * than max_line.
 */
#ifndef IMAPGATE_IMAP_PARSER_H
#define IMAPGATE_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAP_TAG_MAX 64   /* longest tag accepted */
#define IMAP_MAX_ARGS 64  /* tokens per command, list markers included */
#define IMAP_MAX_DEPTH 8  /* nesting of ( ) */

/* RFC 2971 section 3.3: field strings at most 30 octets, values at most
 * 1024, at most 30 field-value pairs. */
#define IMAP_ID_FIELD_MAX 30
#define IMAP_ID_VALUE_MAX 1024
#define IMAP_ID_PAIRS_MAX 30
/* The longest ID that keeps to those bounds, on the wire: every string
 * quoted with every octet escaped, one SP between tokens, tag and CRLF.
 * Its lines and literals together are bounded by this (or max_total if
 * larger); a literal form of a string is always shorter than this one. */
#define IMAP_ID_WIRE_MAX                                                                        \
	(IMAP_TAG_MAX + sizeof(" ID (") +                                                       \
	 IMAP_ID_PAIRS_MAX * (2 + (2 + 2 * IMAP_ID_FIELD_MAX) + (2 + 2 * IMAP_ID_VALUE_MAX)) + \
	 sizeof(")\r\n"))

struct imap_parser_limits {
	size_t max_line;    /* bytes of one line, CRLF included (e.g. 8192) */
	size_t max_literal; /* bytes of one literal (e.g. 8192) */
	size_t max_total;   /* all lines + literals of one command */
};

enum imap_arg_type {
	IMAP_ARG_ATOM,       /* includes NIL, numbers, and astring chars like ']' */
	IMAP_ARG_QUOTED,     /* decoded: quotes removed, \\ and \" unescaped */
	IMAP_ARG_LITERAL,    /* {n}, {n+} or ~{n}: the n bytes */
	IMAP_ARG_LIST_START, /* '(' */
	IMAP_ARG_LIST_END,   /* ')' */
};

struct imap_arg {
	enum imap_arg_type type;
	const char *data; /* NUL-terminated copy (literals may hold NULs: use len) */
	size_t len;
};

struct imap_command {
	const char *tag;  /* valid tag, NUL-terminated */
	const char *name; /* command name as sent (compare case-insensitively) */
	struct imap_arg args[IMAP_MAX_ARGS];
	size_t n_args;
	/* For IMAP_PARSE_LINE: the raw line without CRLF in line/line_len. */
	const char *line;
	size_t line_len;
};

enum imap_parse_status {
	IMAP_PARSE_MORE,    /* every input byte consumed; feed more */
	IMAP_PARSE_COMMAND, /* a whole command is in *cmd */
	IMAP_PARSE_LINE,    /* after imap_parser_expect_line: a raw line in *cmd */
	IMAP_PARSE_LITERAL, /* a synchronising literal {n} was announced and fits the
	                       limits: the caller sends "+ ..." and keeps feeding */
	IMAP_PARSE_ERROR,   /* this command is bad; see imap_parser_error */
};

enum imap_parse_error {
	IMAP_ERR_NONE = 0,
	IMAP_ERR_BAD_TAG,         /* missing/invalid tag: reply "* BAD", never echo it */
	IMAP_ERR_NO_COMMAND,      /* tag without a command name */
	IMAP_ERR_SYNTAX,          /* bad token, unbalanced ( ), bad quoted string */
	IMAP_ERR_LITERAL_TOO_BIG, /* literal over max_literal/max_total; no '+' sent */
	IMAP_ERR_LINE_TOO_LONG,   /* line over max_line: the caller should close */
	IMAP_ERR_TOO_MANY_ARGS,
	IMAP_ERR_ID_LIMIT,        /* an ID string or the pair count over RFC 2971's bounds */
};

struct imap_parser;

/* New parser with these limits (copied). Returns NULL only on ENOMEM. */
struct imap_parser *imap_parser_new(const struct imap_parser_limits *lim);
/* Free and NULL the pointer; NULL is fine. Wipes its buffers (they may hold
 * passwords). */
void imap_parser_free(struct imap_parser **p);

/*
 * Feed len bytes. Sets *consumed to how many were used (the rest belongs to
 * the next call). Returns:
 *  MORE     — all consumed, nothing complete yet;
 *  COMMAND/LINE — *cmd is filled; its pointers stay valid until the next
 *             feed or reset; bytes after the command's line end are not
 *             consumed;
 *  LITERAL  — stop here: the caller sends a continuation, then feeds on;
 *  ERROR    — the command is rejected. imap_parser_error() tells why and
 *             gives the tag when it was valid. The parser then discards the
 *             rest of that command by itself as more bytes are fed
 *             (including a non-synchronising literal it announced, which
 *             is drained, never run) and goes on with the next one.
 * After LINE_TOO_LONG the parser is in discard state until the next line end.
 * LINE_TOO_LONG is also the result when a rejected command, while it is
 * discarded, goes over the bounds it would have had (its line, or its lines
 * and literals together): the caller closes, as nothing there can be valid.
 */
enum imap_parse_status imap_parser_feed(struct imap_parser *p, const uint8_t *data, size_t len,
                                        size_t *consumed, struct imap_command *cmd);

/* Error of the last ERROR result; *tag is set to the valid tag or NULL. */
enum imap_parse_error imap_parser_error(const struct imap_parser *p, const char **tag,
                                        const char **msg);

/* Size of the literal just announced by a LITERAL result. */
size_t imap_parser_literal_size(const struct imap_parser *p);

/* The next complete line is returned raw as IMAP_PARSE_LINE (SASL responses). */
void imap_parser_expect_line(struct imap_parser *p);

/* Forget any partial command and wipe the buffer. */
void imap_parser_reset(struct imap_parser *p);

#endif
