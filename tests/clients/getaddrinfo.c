/*
 * resolve: getaddrinfo(3) as an application calls it, one line per name.
 *
 * Why it exists: feddns's answers reach most programs through the C library's
 * stub resolver, not through dig. glibc and musl (Alpine images) differ: musl
 * asks A and AAAA at once and fails the whole lookup when either query is not
 * answered with NOERROR or NXDOMAIN (a SERVFAIL turns into EAI_AGAIN). The
 * integration tests build this file with gcc (glibc) and musl-gcc -static and
 * run both inside a pod-like network namespace.
 *
 * Usage: resolve [-4|-6] NAME [NAME...]
 * Prints, per name, "NAME ok ADDR ADDR ..." (numeric, sorted, deduplicated) or
 * "NAME error EAI_xxx <gai_strerror text>". Exit status 0 only if every name
 * resolved, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_ADDRS 64

static const char *eai_name(int code)
{
	switch (code) {
	case EAI_AGAIN: return "EAI_AGAIN";
	case EAI_BADFLAGS: return "EAI_BADFLAGS";
	case EAI_FAIL: return "EAI_FAIL";
	case EAI_FAMILY: return "EAI_FAMILY";
	case EAI_MEMORY: return "EAI_MEMORY";
	case EAI_NONAME: return "EAI_NONAME";
	case EAI_SERVICE: return "EAI_SERVICE";
	case EAI_SOCKTYPE: return "EAI_SOCKTYPE";
	case EAI_SYSTEM: return "EAI_SYSTEM";
#ifdef EAI_NODATA
#if EAI_NODATA != EAI_NONAME
	case EAI_NODATA: return "EAI_NODATA";
#endif
#endif
#ifdef EAI_ADDRFAMILY
	case EAI_ADDRFAMILY: return "EAI_ADDRFAMILY";
#endif
	default: return "EAI_UNKNOWN";
	}
}

static int by_text(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

static int resolve(const char *name, int family)
{
	struct addrinfo hints, *res, *ai;
	char addrs[MAX_ADDRS][INET6_ADDRSTRLEN];
	int n = 0, i, rc;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(name, NULL, &hints, &res);
	if (rc != 0) {
		printf("%s error %s %s\n", name, eai_name(rc), gai_strerror(rc));
		return 1;
	}
	for (ai = res; ai != NULL && n < MAX_ADDRS; ai = ai->ai_next) {
		const void *addr;
		if (ai->ai_family == AF_INET)
			addr = &((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			addr = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		else
			continue;
		if (inet_ntop(ai->ai_family, addr, addrs[n], sizeof addrs[n]) != NULL)
			n++;
	}
	freeaddrinfo(res);
	qsort(addrs, n, sizeof addrs[0], by_text);
	printf("%s ok", name);
	for (i = 0; i < n; i++)
		if (i == 0 || strcmp(addrs[i], addrs[i - 1]) != 0)
			printf(" %s", addrs[i]);
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	int family = AF_UNSPEC, failed = 0, i = 1;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-4") == 0)
			family = AF_INET;
		else if (strcmp(argv[i], "-6") == 0)
			family = AF_INET6;
		else
			break;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: resolve [-4|-6] NAME [NAME...]\n");
		return 2;
	}
	for (; i < argc; i++)
		failed |= resolve(argv[i], family);
	fflush(stdout);
	return failed;
}
