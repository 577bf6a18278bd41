/* A null FUSE file system on libfuse's low-level API, the C reference of
 * bench_fuseloop.py: one empty root directory whose attributes the kernel may
 * never cache (attr_timeout 0), so that each stat(2) of the mount point is a
 * GETATTR round trip.  Single-threaded loop, like one pyfuse3 worker.
 *
 *   cc -O2 nullfs_ll.c $(pkg-config --cflags --libs fuse3) -o nullfs_ll
 *   ./nullfs_ll MOUNTPOINT        (foreground; fusermount3 -u ends it)
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void null_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct stat st;
    (void) fi;
    if (ino != FUSE_ROOT_ID) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    memset(&st, 0, sizeof st);
    st.st_ino = ino;
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 2;
    st.st_uid = getuid();
    st.st_gid = getgid();
    fuse_reply_attr(req, &st, 0.0);
}

static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void) parent;
    (void) name;
    fuse_reply_err(req, ENOENT);
}

static const struct fuse_lowlevel_ops ops = {
    .getattr = null_getattr,
    .lookup = null_lookup,
};

int main(int argc, char *argv[])
{
    char *args[] = { argv[0], "-o", "fsname=nullfs_ll,subtype=nullfs_ll" };
    struct fuse_args fargs = FUSE_ARGS_INIT(3, args);
    struct fuse_session *se;
    int ret;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
        return 2;
    }
    se = fuse_session_new(&fargs, &ops, sizeof ops, NULL);
    if (se == NULL)
        return 1;
    if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, argv[1]) != 0)
        return 1;
    ret = fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return ret ? 1 : 0;
}
