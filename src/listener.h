/*
 * listener — the listening sockets: bind (IPv4 and IPv6), accept, the fd
 * reserve that keeps accept() from spinning when descriptors run out.
 */
#ifndef IMAPGATE_LISTENER_H
#define IMAPGATE_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Bind every listen entry of cfg. Returns 0, or -1 with every failure
 * logged. Call before dropping privileges. */
int listener_open_all(const struct config *cfg);
/* Start (or stop) accepting. */
void listener_enable(int on);
/* Close every listening socket (shutdown). */
void listener_close_all(void);
/* The listening sockets a ban filter applies to (those without PROXY
 * headers): up to max descriptors into fds; returns how many. */
size_t listener_filter_fds(int *fds, size_t max);
/* The distinct TCP ports listened on, at most max. */
size_t listener_ports(uint16_t *ports, size_t max);
/* A filter is (or is no longer) attached: accepted sockets shed it. */
void listener_note_filter(bool on);
/* True when cfg's listen entries differ from those bound. */
int listener_changed(const struct config *cfg);

#endif
