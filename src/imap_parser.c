/*
 * imap_parser — turns the bytes an IMAP client sends before login into
 * commands: a tag, a command name and arguments (atoms, quoted strings,
 * literals and list markers). It is a byte-driven state machine, so input may
 * be split anywhere and gives the same results; everything it keeps lives in
 * one buffer allocated at creation and bounded by the limits.
 *
 * It must never do I/O, allocate after creation, recurse on the input, store
 * more than the limits allow, hand back an invalid tag, or let any byte of a
 * rejected command (its literals included) be parsed as a new command. The
 * buffer may hold passwords: it is wiped as soon as a command is done with.
 */
#include "imap_parser.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum pstate {
	ST_IDLE,      /* start of a command, or of a raw line */
	ST_TAG,       /* in the tag */
	ST_AFTER_TAG, /* after the tag's SP, before the name */
	ST_NAME,      /* in the command name */
	ST_TOKEN,     /* an argument may start here */
	ST_SEP,       /* an argument just ended: SP, ')' or line end */
	ST_ATOM,
	ST_TILDE,     /* '~' at token start: literal8 or an atom */
	ST_QUOTED,
	ST_QUOTED_ESC,
	ST_LIT_OPEN,   /* after '{' */
	ST_LIT_DIGITS, /* after '{' and digits */
	ST_LIT_PLUS,   /* after "{n+" */
	ST_LIT_CLOSE,  /* after '}': only the line end may follow */
	ST_LIT_BODY,   /* reading the literal's octets */
	ST_RAW,        /* imap_parser_expect_line: in the raw line */
	ST_DISCARD,    /* skipping the rest of a rejected command's line */
	ST_DRAIN,      /* skipping the octets of a rejected command's literal */
};

/*
 * While a line is read, the tail tracker notes whether it ends in a literal
 * header. It is what lets a rejected command be skipped exactly: "{n+}" at a
 * line end means n octets follow that belong to the same command.
 */
enum tail {
	TAIL_NONE,
	TAIL_OPEN,   /* '{' */
	TAIL_DIGITS, /* '{' digits */
	TAIL_PLUS,   /* '{' digits '+' */
	TAIL_SYNC,   /* '{' digits '}' */
	TAIL_NONSYNC /* '{' digits '+' '}' */
};

#define LITERAL_MAX_DIGITS 20 /* UINT64_MAX has 20 digits */

struct parsed_arg {
	enum imap_arg_type type;
	size_t off, len;
};

struct imap_parser {
	struct imap_parser_limits lim;
	enum pstate state;
	bool cr;        /* last byte was a CR: only LF may follow */
	bool want_line; /* the next line is raw (imap_parser_expect_line) */
	bool raw;       /* the line being discarded was a raw line */
	bool tag_done;  /* buf[0..tag_len] holds a complete, valid tag */
	bool full;      /* a byte did not fit in buf: the command fails */
	bool id;        /* the command is ID: RFC 2971's bounds, see line_max() */
	bool fatal;     /* LINE_TOO_LONG was reported: discard without bounds */
	unsigned id_strings; /* strings of an ID command so far */
	size_t tag_len;
	size_t line_len; /* bytes of the current line, CR and LF included */
	size_t total;    /* bytes of the current command, literals included */

	size_t name_off;
	size_t tok_off; /* start of the token being read, in buf */
	unsigned depth;
	size_t n_args;
	struct parsed_arg args[IMAP_MAX_ARGS];

	uint64_t lit_n; /* literal header being read */
	unsigned lit_digits;
	bool lit_nonsync;
	uint64_t remaining; /* octets left in ST_LIT_BODY / ST_DRAIN */
	size_t lit_size;    /* size given by the last LITERAL result */

	enum tail tail;
	uint64_t tail_n;
	unsigned tail_digits;
	bool tail_bad; /* the digits do not make a valid literal size */

	enum imap_parse_error err;
	const char *err_msg;
	bool err_has_tag;
	char err_tag[IMAP_TAG_MAX + 1];

	size_t wipe_len; /* bytes of the last result to wipe on the next feed */
	size_t used;
	size_t cap;
	unsigned char buf[];
};

/* Room beyond the limits: each stored token may take one byte more than it
 * took on the wire (its NUL, or the NUL after '(' ')'), plus tag and name. */
#define BUF_OVERHEAD (IMAP_MAX_ARGS + 16)

/* What an ID within RFC 2971's bounds stores (its line may be longer than
 * max_total): tag, name, the strings, list markers; NULs are in
 * BUF_OVERHEAD. */
#define ID_STORED_MAX                                                                             \
	(IMAP_TAG_MAX + sizeof("ID") + IMAP_ID_PAIRS_MAX * (IMAP_ID_FIELD_MAX + IMAP_ID_VALUE_MAX) + \
	 2 * IMAP_MAX_ARGS)

static const char MSG_INTERNAL[] = "Parser buffer full";

static bool is_atom_char(uint8_t c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '"':
	case '\\':
		return false;
	default:
		return true; /* ']' as in astring; '*' '%' for LIST patterns */
	}
}

static bool is_tag_char(uint8_t c)
{
	return is_atom_char(c) && c != '+' && c != '*' && c != '%';
}

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* Adds one decimal digit to *n; false when the result is no valid size. */
static bool size_digit(uint64_t *n, unsigned *digits, uint8_t c)
{
	uint64_t d = (uint64_t)(c - '0');

	if (*digits >= LITERAL_MAX_DIGITS || *n > (UINT64_MAX - d) / 10)
		return false;
	*n = *n * 10 + d;
	(*digits)++;
	return true;
}

/* The bounds of the current command's lines, and of its lines and literals
 * together: ID's follow from RFC 2971's string and pair bounds. */
static size_t line_max(const struct imap_parser *p)
{
	return p->id && IMAP_ID_WIRE_MAX > p->lim.max_line ? IMAP_ID_WIRE_MAX : p->lim.max_line;
}

static size_t total_max(const struct imap_parser *p)
{
	return p->id && IMAP_ID_WIRE_MAX > p->lim.max_total ? IMAP_ID_WIRE_MAX : p->lim.max_total;
}

static void tail_reset(struct imap_parser *p)
{
	p->tail = TAIL_NONE;
}

static void tail_feed(struct imap_parser *p, uint8_t c)
{
	if (c == '{') {
		p->tail = TAIL_OPEN;
		p->tail_n = 0;
		p->tail_digits = 0;
		p->tail_bad = false;
	} else if (is_digit(c) && (p->tail == TAIL_OPEN || p->tail == TAIL_DIGITS)) {
		p->tail = TAIL_DIGITS;
		if (!p->tail_bad && !size_digit(&p->tail_n, &p->tail_digits, c))
			p->tail_bad = true;
	} else if (c == '+' && p->tail == TAIL_DIGITS) {
		p->tail = TAIL_PLUS;
	} else if (c == '}' && p->tail == TAIL_DIGITS) {
		p->tail = TAIL_SYNC;
	} else if (c == '}' && p->tail == TAIL_PLUS) {
		p->tail = TAIL_NONSYNC;
	} else {
		p->tail = TAIL_NONE;
	}
}

/* Back to the start of a command. The buffer is not touched: the last
 * result's pointers stay valid until the next feed. */
static void begin_command(struct imap_parser *p)
{
	p->state = ST_IDLE;
	p->cr = false;
	p->raw = false;
	p->tag_done = false;
	p->full = false;
	p->id = false;
	p->fatal = false;
	p->id_strings = 0;
	p->tag_len = 0;
	p->line_len = 0;
	p->total = 0;
	p->name_off = 0;
	p->tok_off = 0;
	p->depth = 0;
	p->n_args = 0;
	tail_reset(p);
}

static void wipe(struct imap_parser *p)
{
	explicit_bzero(p->buf, p->used > p->wipe_len ? p->used : p->wipe_len);
	p->used = 0;
	p->wipe_len = 0;
}

/* A line of a rejected command ended: drain a non-synchronising literal it
 * announced, or the command is over. A synchronising one is never sent, as
 * the client waits for a '+' that does not come. Returns true when that
 * literal goes over what the command could ever have held: the caller is
 * then told LINE_TOO_LONG, rather than draining for as long as it takes. */
static bool discard_line_end(struct imap_parser *p)
{
	bool over = false;

	if (!p->raw && p->tail == TAIL_NONSYNC && !p->tail_bad) {
		p->cr = false;
		tail_reset(p);
		p->line_len = 0;
		if (!p->fatal) {
			/* total <= total_max(p): every discarded byte was checked. */
			over = p->tail_n > total_max(p) - p->total;
			if (over)
				p->fatal = true;
			else
				p->total += (size_t)p->tail_n;
		}
		if (p->tail_n > 0) {
			p->remaining = p->tail_n;
			p->state = ST_DRAIN;
		} else {
			p->state = ST_DISCARD;
		}
		return over;
	}
	begin_command(p);
	return false;
}

/* A rejected command went over its bounds while discarded. */
static enum imap_parse_status give_up(struct imap_parser *p, const char *msg)
{
	p->err = IMAP_ERR_LINE_TOO_LONG;
	p->err_msg = msg;
	p->fatal = true;
	return IMAP_PARSE_ERROR;
}

static enum imap_parse_status discard_byte(struct imap_parser *p, uint8_t c)
{
	bool was_cr = p->cr;

	/* Bounded as the command would have been, so that an endless line
	 * (or one of endless lines) is refused before its end. */
	if (!p->fatal) {
		p->line_len++;
		p->total++;
		if (p->line_len > line_max(p))
			return give_up(p, "Line too long");
		if (p->total > total_max(p))
			return give_up(p, "Command too long");
	}
	if (c == '\n')
		return discard_line_end(p) ? give_up(p, "Literal too big") : IMAP_PARSE_MORE;
	p->cr = false;
	if (was_cr)
		tail_reset(p);
	if (c == '\r')
		p->cr = true;
	else
		tail_feed(p, c);
	return IMAP_PARSE_MORE;
}

/* Rejects the command at byte c (already consumed). */
static enum imap_parse_status fail(struct imap_parser *p, uint8_t c, enum imap_parse_error e,
                                   const char *msg)
{
	p->err = e;
	p->err_msg = msg;
	p->err_has_tag = p->tag_done;
	memcpy(p->err_tag, p->buf, p->tag_done ? p->tag_len : 0);
	p->err_tag[p->tag_done ? p->tag_len : 0] = '\0';
	wipe(p);
	p->full = false;
	p->fatal = e == IMAP_ERR_LINE_TOO_LONG;
	if (p->state == ST_RAW || (p->state == ST_IDLE && p->want_line)) {
		p->raw = true;
		p->want_line = false;
	}
	p->state = ST_DISCARD;
	p->cr = false;
	if (c == '\n') {
		if (discard_line_end(p))
			give_up(p, "Literal too big");
	} else if (c == '\r') {
		p->cr = true;
	}
	return IMAP_PARSE_ERROR;
}

/* The limits and BUF_OVERHEAD make overflow impossible; should it happen
 * anyway, the byte is dropped and step() fails the command. */
static void put(struct imap_parser *p, uint8_t c)
{
	if (p->used >= p->cap)
		p->full = true;
	else
		p->buf[p->used++] = c;
}

/* Ends the token started at tok_off. */
static void add_arg(struct imap_parser *p, enum imap_arg_type type)
{
	struct parsed_arg *a;

	put(p, '\0');
	if (p->full || p->n_args >= IMAP_MAX_ARGS) {
		p->full = true;
		return;
	}
	a = &p->args[p->n_args++];
	a->type = type;
	a->off = p->tok_off;
	a->len = p->used - 1 - p->tok_off;
}

static enum imap_parse_status emit_command(struct imap_parser *p, uint8_t c,
                                           struct imap_command *cmd)
{
	size_t i;

	if (p->full)
		return fail(p, c, IMAP_ERR_LINE_TOO_LONG, MSG_INTERNAL);
	if (p->depth > 0)
		return fail(p, c, IMAP_ERR_SYNTAX, "Unbalanced parentheses");
	memset(cmd, 0, sizeof *cmd);
	cmd->tag = (const char *)p->buf;
	cmd->name = (const char *)p->buf + p->name_off;
	for (i = 0; i < p->n_args; i++) {
		cmd->args[i].type = p->args[i].type;
		cmd->args[i].data = (const char *)p->buf + p->args[i].off;
		cmd->args[i].len = p->args[i].len;
	}
	cmd->n_args = p->n_args;
	p->wipe_len = p->used;
	begin_command(p);
	return IMAP_PARSE_COMMAND;
}

static enum imap_parse_status emit_line(struct imap_parser *p, uint8_t c,
                                        struct imap_command *cmd)
{
	put(p, '\0');
	if (p->full)
		return fail(p, c, IMAP_ERR_LINE_TOO_LONG, MSG_INTERNAL);
	memset(cmd, 0, sizeof *cmd);
	cmd->line = (const char *)p->buf;
	cmd->line_len = p->used - 1;
	p->want_line = false;
	p->wipe_len = p->used;
	begin_command(p);
	return IMAP_PARSE_LINE;
}

/*
 * ID's strings, in the order sent, are field, value, field, value...: each
 * is bounded as it comes in (RFC 2971 section 3.3), and so is their number.
 */
static size_t id_string_max(const struct imap_parser *p)
{
	return p->id_strings % 2 ? IMAP_ID_FIELD_MAX : IMAP_ID_VALUE_MAX;
}

static enum imap_parse_status id_string_long(struct imap_parser *p, uint8_t c)
{
	return fail(p, c, IMAP_ERR_ID_LIMIT,
	            p->id_strings % 2 ? "ID field name too long (RFC 2971: at most 30 octets)"
	                              : "ID value too long (RFC 2971: at most 1024 octets)");
}

/* A string token starts (atom, quoted, literal). */
static enum imap_parse_status string_start(struct imap_parser *p, uint8_t c)
{
	if (p->id && ++p->id_strings > 2 * IMAP_ID_PAIRS_MAX)
		return fail(p, c, IMAP_ERR_ID_LIMIT, "Too many ID fields (RFC 2971: at most 30 pairs)");
	return IMAP_PARSE_MORE;
}

/* One more octet of the string token being read. */
static enum imap_parse_status string_put(struct imap_parser *p, uint8_t c)
{
	if (p->id && p->used - p->tok_off >= id_string_max(p))
		return id_string_long(p, c);
	put(p, c);
	return IMAP_PARSE_MORE;
}

static void finish_literal(struct imap_parser *p)
{
	/* Room for the octets and the NUL was checked when it was announced. */
	add_arg(p, IMAP_ARG_LITERAL);
	p->state = ST_SEP;
}

/* The line end after "{n}" / "{n+}". */
static enum imap_parse_status literal_header_end(struct imap_parser *p, uint8_t c)
{
	uint64_t n = p->lit_n;

	/* total <= total_max(p) holds here: every line byte was checked. */
	if (p->id && n > id_string_max(p))
		return id_string_long(p, c);
	if (n > p->lim.max_literal || n > total_max(p) - p->total)
		return fail(p, c, IMAP_ERR_LITERAL_TOO_BIG, "Literal too big");
	if (n + 1 > p->cap - p->used)
		return fail(p, c, IMAP_ERR_LITERAL_TOO_BIG, MSG_INTERNAL);
	p->total += (size_t)n;
	p->remaining = n;
	p->tok_off = p->used;
	p->line_len = 0;
	tail_reset(p);
	p->state = ST_LIT_BODY;
	if (n == 0)
		finish_literal(p);
	if (p->lit_nonsync)
		return IMAP_PARSE_MORE;
	p->lit_size = (size_t)n;
	return IMAP_PARSE_LITERAL;
}

static enum imap_parse_status list_end(struct imap_parser *p, uint8_t c)
{
	if (p->n_args >= IMAP_MAX_ARGS)
		return fail(p, c, IMAP_ERR_TOO_MANY_ARGS, "Too many arguments");
	if (p->depth == 0)
		return fail(p, c, IMAP_ERR_SYNTAX, "Unbalanced parentheses");
	p->depth--;
	p->tok_off = p->used;
	put(p, ')');
	add_arg(p, IMAP_ARG_LIST_END);
	p->state = ST_SEP;
	return IMAP_PARSE_MORE;
}

static enum imap_parse_status after_token(struct imap_parser *p, uint8_t c)
{
	if (c == ' ') {
		p->state = ST_TOKEN;
		return IMAP_PARSE_MORE;
	}
	if (c == ')')
		return list_end(p, c);
	return fail(p, c, IMAP_ERR_SYNTAX, "Missing space between arguments");
}

static enum imap_parse_status token_start(struct imap_parser *p, uint8_t c)
{
	if (c == ' ')
		return IMAP_PARSE_MORE; /* lenient: several SP */
	if (c == ')')
		return list_end(p, c);
	if (p->n_args >= IMAP_MAX_ARGS)
		return fail(p, c, IMAP_ERR_TOO_MANY_ARGS, "Too many arguments");
	p->tok_off = p->used;
	switch (c) {
	case '(':
		if (p->depth >= IMAP_MAX_DEPTH)
			return fail(p, c, IMAP_ERR_SYNTAX, "Lists nested too deeply");
		p->depth++;
		put(p, '(');
		add_arg(p, IMAP_ARG_LIST_START);
		return IMAP_PARSE_MORE;
	case '"':
	case '{':
	case '~':
		break;
	default:
		if (!is_atom_char(c))
			return fail(p, c, IMAP_ERR_SYNTAX, "Invalid character");
		break;
	}
	if (string_start(p, c) != IMAP_PARSE_MORE)
		return IMAP_PARSE_ERROR;
	switch (c) {
	case '"':
		p->state = ST_QUOTED;
		return IMAP_PARSE_MORE;
	case '{':
		p->lit_n = 0;
		p->lit_digits = 0;
		p->state = ST_LIT_OPEN;
		return IMAP_PARSE_MORE;
	case '~':
		p->state = ST_TILDE;
		return IMAP_PARSE_MORE;
	default:
		p->state = ST_ATOM;
		return string_put(p, c);
	}
}

static enum imap_parse_status atom_byte(struct imap_parser *p, uint8_t c)
{
	if (is_atom_char(c))
		return string_put(p, c);
	add_arg(p, IMAP_ARG_ATOM);
	p->state = ST_SEP;
	return after_token(p, c);
}

/* A byte of a command line other than CR and LF. */
static enum imap_parse_status line_byte(struct imap_parser *p, uint8_t c)
{
	switch (p->state) {
	case ST_IDLE:
		if (p->want_line) {
			p->state = ST_RAW;
			put(p, c);
			return IMAP_PARSE_MORE;
		}
		if (!is_tag_char(c))
			return fail(p, c, IMAP_ERR_BAD_TAG, "Invalid tag");
		put(p, c);
		p->tag_len = 1;
		p->state = ST_TAG;
		return IMAP_PARSE_MORE;
	case ST_TAG:
		if (c == ' ') {
			put(p, '\0');
			p->tag_done = true;
			p->state = ST_AFTER_TAG;
			return IMAP_PARSE_MORE;
		}
		if (!is_tag_char(c) || p->tag_len >= IMAP_TAG_MAX)
			return fail(p, c, IMAP_ERR_BAD_TAG, "Invalid tag");
		put(p, c);
		p->tag_len++;
		return IMAP_PARSE_MORE;
	case ST_AFTER_TAG:
		if (c == ' ')
			return IMAP_PARSE_MORE;
		if (!is_atom_char(c))
			return fail(p, c, IMAP_ERR_NO_COMMAND, "Missing command");
		p->name_off = p->used;
		put(p, c);
		p->state = ST_NAME;
		return IMAP_PARSE_MORE;
	case ST_NAME:
		if (c == ' ') {
			put(p, '\0');
			p->id = !p->full && strcasecmp((const char *)p->buf + p->name_off, "ID") == 0;
			p->state = ST_TOKEN;
			return IMAP_PARSE_MORE;
		}
		if (!is_atom_char(c))
			return fail(p, c, IMAP_ERR_SYNTAX, "Invalid command name");
		put(p, c);
		return IMAP_PARSE_MORE;
	case ST_TOKEN:
		return token_start(p, c);
	case ST_SEP:
		return after_token(p, c);
	case ST_ATOM:
		return atom_byte(p, c);
	case ST_TILDE:
		if (c == '{') {
			p->lit_n = 0;
			p->lit_digits = 0;
			p->state = ST_LIT_OPEN;
			return IMAP_PARSE_MORE;
		}
		put(p, '~');
		p->state = ST_ATOM;
		return atom_byte(p, c);
	case ST_QUOTED:
		if (c == '"') {
			add_arg(p, IMAP_ARG_QUOTED);
			p->state = ST_SEP;
			return IMAP_PARSE_MORE;
		}
		if (c == '\\') {
			p->state = ST_QUOTED_ESC;
			return IMAP_PARSE_MORE;
		}
		if (c == '\0')
			return fail(p, c, IMAP_ERR_SYNTAX, "Invalid quoted string");
		return string_put(p, c);
	case ST_QUOTED_ESC:
		if (c != '"' && c != '\\')
			return fail(p, c, IMAP_ERR_SYNTAX, "Invalid quoted string");
		p->state = ST_QUOTED;
		return string_put(p, c);
	case ST_LIT_OPEN:
	case ST_LIT_DIGITS:
		if (is_digit(c)) {
			if (!size_digit(&p->lit_n, &p->lit_digits, c))
				return fail(p, c, IMAP_ERR_SYNTAX, "Invalid literal size");
			p->state = ST_LIT_DIGITS;
			return IMAP_PARSE_MORE;
		}
		if (p->state == ST_LIT_DIGITS && (c == '+' || c == '}')) {
			p->lit_nonsync = c == '+';
			p->state = c == '+' ? ST_LIT_PLUS : ST_LIT_CLOSE;
			return IMAP_PARSE_MORE;
		}
		return fail(p, c, IMAP_ERR_SYNTAX, "Invalid literal");
	case ST_LIT_PLUS:
		if (c != '}')
			return fail(p, c, IMAP_ERR_SYNTAX, "Invalid literal");
		p->state = ST_LIT_CLOSE;
		return IMAP_PARSE_MORE;
	case ST_LIT_CLOSE:
		return fail(p, c, IMAP_ERR_SYNTAX, "Literal not at end of line");
	case ST_RAW:
		put(p, c);
		return IMAP_PARSE_MORE;
	case ST_LIT_BODY:
	case ST_DISCARD:
	case ST_DRAIN:
		break;
	}
	return fail(p, c, IMAP_ERR_SYNTAX, MSG_INTERNAL);
}

/* The line ends here (LF, after an optional CR). */
static enum imap_parse_status line_end(struct imap_parser *p, uint8_t c, struct imap_command *cmd)
{
	switch (p->state) {
	case ST_IDLE:
		if (p->want_line)
			return emit_line(p, c, cmd);
		begin_command(p); /* blank line: ignored */
		return IMAP_PARSE_MORE;
	case ST_TAG:
		put(p, '\0');
		p->tag_done = true;
		return fail(p, c, IMAP_ERR_NO_COMMAND, "Missing command");
	case ST_AFTER_TAG:
		return fail(p, c, IMAP_ERR_NO_COMMAND, "Missing command");
	case ST_NAME:
		put(p, '\0');
		return emit_command(p, c, cmd);
	case ST_TILDE:
		put(p, '~');
		/* fall through */
	case ST_ATOM:
		add_arg(p, IMAP_ARG_ATOM);
		/* fall through */
	case ST_TOKEN:
	case ST_SEP:
		return emit_command(p, c, cmd);
	case ST_QUOTED:
	case ST_QUOTED_ESC:
		return fail(p, c, IMAP_ERR_SYNTAX, "Invalid quoted string");
	case ST_LIT_OPEN:
	case ST_LIT_DIGITS:
	case ST_LIT_PLUS:
		return fail(p, c, IMAP_ERR_SYNTAX, "Invalid literal");
	case ST_LIT_CLOSE:
		return literal_header_end(p, c);
	case ST_RAW:
		return emit_line(p, c, cmd);
	case ST_LIT_BODY:
	case ST_DISCARD:
	case ST_DRAIN:
		break;
	}
	return fail(p, c, IMAP_ERR_SYNTAX, MSG_INTERNAL);
}

/* Whether a CR may end the line in this state (it must then be followed by
 * LF); elsewhere a CR is itself the error. */
static bool cr_allowed(enum pstate s)
{
	switch (s) {
	case ST_QUOTED:
	case ST_QUOTED_ESC:
	case ST_LIT_OPEN:
	case ST_LIT_DIGITS:
	case ST_LIT_PLUS:
		return false;
	default:
		return true;
	}
}

/* One byte of a line (not a literal's octet). */
static enum imap_parse_status step(struct imap_parser *p, uint8_t c, struct imap_command *cmd)
{
	bool was_cr = p->cr;
	enum imap_parse_status st;

	if (p->state == ST_DISCARD)
		return discard_byte(p, c);
	p->cr = false;
	p->line_len++;
	p->total++;
	if (c != '\n') {
		if (was_cr)
			tail_reset(p);
		if (c != '\r')
			tail_feed(p, c);
	}
	/* Checked on every byte so that an endless line is refused before its
	 * end, which may never come. */
	if (p->line_len > line_max(p))
		return fail(p, c, IMAP_ERR_LINE_TOO_LONG, "Line too long");
	if (p->total > total_max(p))
		return fail(p, c, IMAP_ERR_LINE_TOO_LONG, "Command too long");
	if (was_cr && c != '\n')
		return fail(p, c, IMAP_ERR_SYNTAX, "CR not followed by LF");
	if (c == '\r') {
		if (!cr_allowed(p->state))
			return fail(p, c, IMAP_ERR_SYNTAX,
			            p->state == ST_QUOTED || p->state == ST_QUOTED_ESC
			                ? "Invalid quoted string"
			                : "Invalid literal");
		p->cr = true;
		return IMAP_PARSE_MORE;
	}
	st = c == '\n' ? line_end(p, c, cmd) : line_byte(p, c);
	if (st == IMAP_PARSE_MORE && p->full)
		return fail(p, c, IMAP_ERR_LINE_TOO_LONG, MSG_INTERNAL);
	return st;
}

struct imap_parser *imap_parser_new(const struct imap_parser_limits *lim)
{
	struct imap_parser *p;
	size_t need;

	/* A raw line is bounded by max_total too, so it fits as well. */
	if (lim->max_total > SIZE_MAX - BUF_OVERHEAD - ID_STORED_MAX - sizeof *p)
		return NULL;
	need = (lim->max_total > ID_STORED_MAX ? lim->max_total : ID_STORED_MAX) + BUF_OVERHEAD;
	p = calloc(1, sizeof *p + need);
	if (p == NULL)
		return NULL;
	p->lim = *lim;
	p->cap = need;
	begin_command(p);
	return p;
}

void imap_parser_free(struct imap_parser **pp)
{
	struct imap_parser *p = *pp;

	if (p == NULL)
		return;
	explicit_bzero(p, sizeof *p + p->cap);
	free(p);
	*pp = NULL;
}

enum imap_parse_status imap_parser_feed(struct imap_parser *p, const uint8_t *data, size_t len,
                                        size_t *consumed, struct imap_command *cmd)
{
	size_t i = 0;

	/* The last command or line is done with once the caller feeds again. */
	if (p->wipe_len > 0)
		wipe(p);
	while (i < len) {
		enum imap_parse_status st;
		size_t k;

		if (p->state == ST_LIT_BODY || p->state == ST_DRAIN) {
			k = len - i;
			if ((uint64_t)k > p->remaining)
				k = (size_t)p->remaining;
			if (p->state == ST_LIT_BODY) {
				memcpy(p->buf + p->used, data + i, k);
				p->used += k;
			}
			p->remaining -= k;
			i += k;
			if (p->remaining > 0)
				continue;
			if (p->state == ST_LIT_BODY) {
				finish_literal(p);
			} else {
				/* The rejected command's line goes on after its literal. */
				p->state = ST_DISCARD;
				p->cr = false;
				p->line_len = 0;
				tail_reset(p);
			}
			continue;
		}
		st = step(p, data[i++], cmd);
		if (st != IMAP_PARSE_MORE) {
			*consumed = i;
			return st;
		}
	}
	*consumed = len;
	return IMAP_PARSE_MORE;
}

enum imap_parse_error imap_parser_error(const struct imap_parser *p, const char **tag,
                                        const char **msg)
{
	if (tag != NULL)
		*tag = p->err != IMAP_ERR_NONE && p->err_has_tag ? p->err_tag : NULL;
	if (msg != NULL)
		*msg = p->err != IMAP_ERR_NONE ? p->err_msg : "No error";
	return p->err;
}

size_t imap_parser_literal_size(const struct imap_parser *p)
{
	return p->lit_size;
}

void imap_parser_expect_line(struct imap_parser *p)
{
	p->want_line = true;
}

void imap_parser_reset(struct imap_parser *p)
{
	explicit_bzero(p->buf, p->cap);
	p->used = 0;
	p->wipe_len = 0;
	p->want_line = false;
	p->lit_size = 0;
	p->remaining = 0;
	p->err = IMAP_ERR_NONE;
	p->err_msg = NULL;
	p->err_has_tag = false;
	explicit_bzero(p->err_tag, sizeof p->err_tag);
	begin_command(p);
}
