/*
 * LD_PRELOAD shim for bench/checks_keepalived.py --host: lets keepalived's checker run on a
 * kernel without IPVS (this machine's), so that its CPU per check can be measured next to
 * ours without emulation.
 *
 * keepalived's checker falls back from generic netlink to the IPVS socket options on a raw
 * socket, and exits when IP_VS_SO_GET_INFO fails. Here every IPVS socket option (level
 * IPPROTO_IP, IP_VS_BASE_CTL .. IP_VS_BASE_CTL + 15) succeeds as on an empty IPVS table:
 * GET_INFO reports version 1.2.1, gets return zeros, sets do nothing. keepalived calls these
 * at start-up and when a verdict changes a real server; no probe goes through them. Every
 * other socket option goes to libc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define IP_VS_BASE_CTL (64 + 1024 + 64)
#define IP_VS_LAST_CTL (IP_VS_BASE_CTL + 15)
#define IP_VS_SO_GET_INFO IP_VS_BASE_CTL

static int is_ipvs(int level, int name)
{
	return level == IPPROTO_IP && name >= IP_VS_BASE_CTL && name <= IP_VS_LAST_CTL;
}

int getsockopt(int fd, int level, int name, void *value, socklen_t *length)
{
	static int (*next)(int, int, int, void *, socklen_t *);

	if (is_ipvs(level, name)) {
		memset(value, 0, *length);
		if (name == IP_VS_SO_GET_INFO && *length >= 3 * sizeof(unsigned int)) {
			unsigned int *info = value; /* version, connection table size, services */
			info[0] = 0x010201;
			info[1] = 4096;
		}
		return 0;
	}
	if (!next)
		next = (int (*)(int, int, int, void *, socklen_t *))dlsym(RTLD_NEXT, "getsockopt");
	return next(fd, level, name, value, length);
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t length)
{
	static int (*next)(int, int, int, const void *, socklen_t);

	if (is_ipvs(level, name))
		return 0;
	if (!next)
		next = (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
	return next(fd, level, name, value, length);
}
