/* Unit tests for native/src/ipc.c: request encoding (size agreement, exact capacity, limits,
 * lower-cased header names), worker-frame parsing whole, at every prefix and byte by byte,
 * malformed frames, header-pair iteration, and the golden vectors of tests/ipc_vectors.json
 * that krait/protocol.py is tested against as well. Inputs sit against a PROT_NONE guard page. */
#include "ipc.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* A slice from a string literal; sizeof keeps embedded NUL bytes. */
#define S(lit) { (lit), sizeof(lit) - 1 }

typedef struct {
    const char *name;
    krait__ipc_request r;
    const char *hex;  /* the exact frame */
} req_vector;

typedef struct {
    const char *name;
    uint8_t type;
    uint32_t id;
    uint16_t status;
    uint8_t body_kind;
    const krait__slice *headers;  /* 2*nheaders slices: name, value, ... */
    size_t nheaders;
    krait__slice body;
    const char *hex;
} resp_vector;

typedef struct {
    const char *name;
    uint32_t id;
    uint16_t status;
    size_t nframes;  /* 1: one inline RESPONSE; more: RESPONSE(STREAM), CHUNK..., END */
    const krait__slice *headers;
    size_t nheaders;
    krait__slice body;
    const char *hex;  /* all frames back to back */
} stream_vector;

typedef struct {
    const char *name;
    const char *hex;
} malformed_vector;

/* ---- BEGIN generated from tests/ipc_vectors.json by a one-off script (not kept). When the
 * vectors change, regenerate this block in the same layout: tests/test_protocol.py checks
 * that every .hex below equals the JSON frame with the same .name. ---- */

static const krait__slice req_minimal_get_headers[] = {
    S("Host"), S("example.com"),
};
static const krait__slice req_unicode_path_params[] = {
    S("name"), S("caf\303\251"),
    S("id"), S("42"),
};
static const krait__slice req_unicode_path_headers[] = {
    S("HOST"), S("\303\251xample.org"),
    S("Accept-Language"), S("fr"),
};
static const krait__slice req_non_utf8_bytes_headers[] = {
    S("X-Latin1"), S("caf\351"),
};
static const krait__slice req_binary_body_headers[] = {
    S("Content-Type"), S("application/octet-stream"),
    S("Content-Length"), S("512"),
};
static const krait__slice req_many_headers_headers[] = {
    S("X-Header-00"), S(""),
    S("X-Header-01"), S("value 1"),
    S("X-Header-02"), S("value 2value 2"),
    S("X-Header-03"), S(""),
    S("X-Header-04"), S("value 4"),
    S("X-Header-05"), S("value 5value 5"),
    S("X-Header-06"), S(""),
    S("X-Header-07"), S("value 7"),
    S("X-Header-08"), S("value 8value 8"),
    S("X-Header-09"), S(""),
    S("X-Header-10"), S("value 10"),
    S("X-Header-11"), S("value 11value 11"),
    S("X-Header-12"), S(""),
    S("X-Header-13"), S("value 13"),
    S("X-Header-14"), S("value 14value 14"),
    S("X-Header-15"), S(""),
    S("X-Header-16"), S("value 16"),
    S("X-Header-17"), S("value 17value 17"),
    S("X-Header-18"), S(""),
    S("X-Header-19"), S("value 19"),
    S("X-Header-20"), S("value 20value 20"),
    S("X-Header-21"), S(""),
    S("X-Header-22"), S("value 22"),
    S("X-Header-23"), S("value 23value 23"),
    S("X-Header-24"), S(""),
    S("X-Header-25"), S("value 25"),
    S("X-Header-26"), S("value 26value 26"),
    S("X-Header-27"), S(""),
    S("X-Header-28"), S("value 28"),
    S("X-Header-29"), S("value 29value 29"),
    S("X-Header-30"), S(""),
    S("X-Header-31"), S("value 31"),
    S("X-Header-32"), S("value 32value 32"),
    S("X-Header-33"), S(""),
    S("X-Header-34"), S("value 34"),
    S("X-Header-35"), S("value 35value 35"),
    S("X-Header-36"), S(""),
    S("X-Header-37"), S("value 37"),
    S("X-Header-38"), S("value 38value 38"),
    S("X-Header-39"), S(""),
    S("Cookie"), S("a=1"),
    S("cookie"), S("b=2"),
    S("Empty"), S(""),
};
static const krait__slice req_body_file_headers[] = {
    S("Content-Length"), S("20000000"),
};
static const krait__slice req_websocket_params[] = {
    S("room"), S("room1"),
    S(""), S(""),
};
static const krait__slice req_websocket_headers[] = {
    S("Upgrade"), S("websocket"),
    S("Sec-WebSocket-Key"), S("dGhlIHNhbXBsZSBub25jZQ=="),
};
static const krait__slice req_route_min_nul_bytes_headers[] = {
    S("X-Nul"), S("a\000b"),
};

static const req_vector req_vectors[] = {
    {
        .name = "request/all_empty",
        .r = {
            .id = 0u, .flags = 0, .route = 0,
            .method = S(""),
            .path = S(""),
            .query = S(""),
            .version = S(""),
            .file = S(""),
            .remote_addr = S(""),
            .remote_port = 0,
            .server_addr = S(""),
            .server_port = 0,
            .params = NULL, .nparams = 0,
            .headers = NULL, .nheaders = 0,
            .body = S(""),
        },
        .hex = "3200000001000000000000000000000000000000000000000000000000000000000000000000000000"
               "00000000000000000000000000",
    },
    {
        .name = "request/minimal_get",
        .r = {
            .id = 1u, .flags = 0, .route = -1,
            .method = S("GET"),
            .path = S("/"),
            .query = S(""),
            .version = S("HTTP/1.1"),
            .file = S(""),
            .remote_addr = S("127.0.0.1"),
            .remote_port = 54321,
            .server_addr = S("127.0.0.1"),
            .server_port = 8080,
            .params = NULL, .nparams = 0,
            .headers = req_minimal_get_headers, .nheaders = 1,
            .body = S(""),
        },
        .hex = "67000000010100000000ffffffff03000000474554010000002f0000000008000000485454502f312e"
               "3100000000090000003132372e302e302e3131d4090000003132372e302e302e31901f000001000400"
               "0000686f73740b0000006578616d706c652e636f6d00000000",
    },
    {
        .name = "request/unicode_path",
        .r = {
            .id = 2u, .flags = 0, .route = 3,
            .method = S("GET"),
            .path = S("/caf\303\251/\346\227\245\346\234\254/\360\237\220\215"),
            .query = S("q=%C3%A9&x"),
            .version = S("HTTP/1.1"),
            .file = S(""),
            .remote_addr = S("::1"),
            .remote_port = 443,
            .server_addr = S("::1"),
            .server_port = 8443,
            .params = req_unicode_path_params, .nparams = 2,
            .headers = req_unicode_path_headers, .nheaders = 2,
            .body = S(""),
        },
        .hex = "ad0000000102000000000300000003000000474554120000002f636166c3a92fe697a5e69cac2ff09f"
               "908d0a000000713d254333254139267808000000485454502f312e3100000000030000003a3a31bb01"
               "030000003a3a31fb200200040000006e616d6505000000636166c3a902000000696402000000343202"
               "0004000000686f73740c000000c3a978616d706c652e6f72670f0000006163636570742d6c616e6775"
               "61676502000000667200000000",
    },
    {
        .name = "request/non_utf8_bytes",
        .r = {
            .id = 3u, .flags = 0, .route = -1,
            .method = S("GET"),
            .path = S("/bad/\377\376.py"),
            .query = S("a=%FF"),
            .version = S("HTTP/1.1"),
            .file = S(""),
            .remote_addr = S("10.0.0.7"),
            .remote_port = 1,
            .server_addr = S("10.0.0.1"),
            .server_port = 80,
            .params = NULL, .nparams = 0,
            .headers = req_non_utf8_bytes_headers, .nheaders = 1,
            .body = S(""),
        },
        .hex = "70000000010300000000ffffffff030000004745540a0000002f6261642ffffe2e707905000000613d"
               "25464608000000485454502f312e31000000000800000031302e302e302e3701000800000031302e30"
               "2e302e3150000000010008000000782d6c6174696e3104000000636166e900000000",
    },
    {
        .name = "request/binary_body",
        .r = {
            .id = 16909060u, .flags = 4, .route = 7,
            .method = S("POST"),
            .path = S("/upload"),
            .query = S(""),
            .version = S("HTTP/1.1"),
            .file = S("/srv/site/upload.py"),
            .remote_addr = S("192.0.2.1"),
            .remote_port = 65535,
            .server_addr = S("192.0.2.254"),
            .server_port = 443,
            .params = NULL, .nparams = 0,
            .headers = req_binary_body_headers, .nheaders = 2,
            .body = S("\000\001\002\003\004\005\006\007\010\011\012\013\014\015\016"
              "\017\020\021\022\023\024\025\026\027\030\031\032\033\034\035"
              "\036\037 !\042#$%&'()*+,-./0123456789:;<=>\077@ABCDEFGHIJKLMNO"
              "PQRSTUVWXYZ[\134]^_`abcdefghijklmnopqrstuvwxyz{|}~\177\200\201"
              "\202\203\204\205\206\207\210\211\212\213\214\215\216\217\220"
              "\221\222\223\224\225\226\227\230\231\232\233\234\235\236\237"
              "\240\241\242\243\244\245\246\247\250\251\252\253\254\255\256"
              "\257\260\261\262\263\264\265\266\267\270\271\272\273\274\275"
              "\276\277\300\301\302\303\304\305\306\307\310\311\312\313\314"
              "\315\316\317\320\321\322\323\324\325\326\327\330\331\332\333"
              "\334\335\336\337\340\341\342\343\344\345\346\347\350\351\352"
              "\353\354\355\356\357\360\361\362\363\364\365\366\367\370\371"
              "\372\373\374\375\376\377\000\001\002\003\004\005\006\007\010"
              "\011\012\013\014\015\016\017\020\021\022\023\024\025\026\027"
              "\030\031\032\033\034\035\036\037 !\042#$%&'()*+,-./0123456789:"
              ";<=>\077@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\134]^_`abcdefghijklmnopqr"
              "stuvwxyz{|}~\177\200\201\202\203\204\205\206\207\210\211\212"
              "\213\214\215\216\217\220\221\222\223\224\225\226\227\230\231"
              "\232\233\234\235\236\237\240\241\242\243\244\245\246\247\250"
              "\251\252\253\254\255\256\257\260\261\262\263\264\265\266\267"
              "\270\271\272\273\274\275\276\277\300\301\302\303\304\305\306"
              "\307\310\311\312\313\314\315\316\317\320\321\322\323\324\325"
              "\326\327\330\331\332\333\334\335\336\337\340\341\342\343\344"
              "\345\346\347\350\351\352\353\354\355\356\357\360\361\362\363"
              "\364\365\366\367\370\371\372\373\374\375\376\377"),
        },
        .hex = "b10200000104030201040700000004000000504f5354070000002f75706c6f61640000000008000000"
               "485454502f312e31130000002f7372762f736974652f75706c6f61642e7079090000003139322e302e"
               "322e31ffff0b0000003139322e302e322e323534bb01000002000c000000636f6e74656e742d747970"
               "65180000006170706c69636174696f6e2f6f637465742d73747265616d0e000000636f6e74656e742d"
               "6c656e6774680300000035313200020000000102030405060708090a0b0c0d0e0f1011121314151617"
               "18191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40"
               "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60616263646566676869"
               "6a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192"
               "939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babb"
               "bcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4"
               "e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d"
               "0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30313233343536"
               "3738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
               "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788"
               "898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1"
               "b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9da"
               "dbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
    },
    {
        .name = "request/many_headers",
        .r = {
            .id = 5u, .flags = 0, .route = -1,
            .method = S("GET"),
            .path = S("/h"),
            .query = S(""),
            .version = S("HTTP/1.1"),
            .file = S(""),
            .remote_addr = S("127.0.0.1"),
            .remote_port = 8080,
            .server_addr = S("127.0.0.1"),
            .server_port = 65535,
            .params = NULL, .nparams = 0,
            .headers = req_many_headers_headers, .nheaders = 43,
            .body = S(""),
        },
        .hex = "a7040000010500000000ffffffff03000000474554020000002f680000000008000000485454502f31"
               "2e3100000000090000003132372e302e302e31901f090000003132372e302e302e31ffff00002b000b"
               "000000782d6865616465722d3030000000000b000000782d6865616465722d30310700000076616c75"
               "6520310b000000782d6865616465722d30320e00000076616c7565203276616c756520320b00000078"
               "2d6865616465722d3033000000000b000000782d6865616465722d30340700000076616c756520340b"
               "000000782d6865616465722d30350e00000076616c7565203576616c756520350b000000782d686561"
               "6465722d3036000000000b000000782d6865616465722d30370700000076616c756520370b00000078"
               "2d6865616465722d30380e00000076616c7565203876616c756520380b000000782d6865616465722d"
               "3039000000000b000000782d6865616465722d31300800000076616c75652031300b000000782d6865"
               "616465722d31311000000076616c756520313176616c75652031310b000000782d6865616465722d31"
               "32000000000b000000782d6865616465722d31330800000076616c75652031330b000000782d686561"
               "6465722d31341000000076616c756520313476616c75652031340b000000782d6865616465722d3135"
               "000000000b000000782d6865616465722d31360800000076616c75652031360b000000782d68656164"
               "65722d31371000000076616c756520313776616c75652031370b000000782d6865616465722d313800"
               "0000000b000000782d6865616465722d31390800000076616c75652031390b000000782d6865616465"
               "722d32301000000076616c756520323076616c75652032300b000000782d6865616465722d32310000"
               "00000b000000782d6865616465722d32320800000076616c75652032320b000000782d686561646572"
               "2d32331000000076616c756520323376616c75652032330b000000782d6865616465722d3234000000"
               "000b000000782d6865616465722d32350800000076616c75652032350b000000782d6865616465722d"
               "32361000000076616c756520323676616c75652032360b000000782d6865616465722d323700000000"
               "0b000000782d6865616465722d32380800000076616c75652032380b000000782d6865616465722d32"
               "391000000076616c756520323976616c75652032390b000000782d6865616465722d3330000000000b"
               "000000782d6865616465722d33310800000076616c75652033310b000000782d6865616465722d3332"
               "1000000076616c756520333276616c75652033320b000000782d6865616465722d3333000000000b00"
               "0000782d6865616465722d33340800000076616c75652033340b000000782d6865616465722d333510"
               "00000076616c756520333576616c75652033350b000000782d6865616465722d3336000000000b0000"
               "00782d6865616465722d33370800000076616c75652033370b000000782d6865616465722d33381000"
               "000076616c756520333876616c75652033380b000000782d6865616465722d33390000000006000000"
               "636f6f6b696503000000613d3106000000636f6f6b696503000000623d3205000000656d7074790000"
               "000000000000",
    },
    {
        .name = "request/body_file",
        .r = {
            .id = 6u, .flags = 5, .route = 1,
            .method = S("PUT"),
            .path = S("/big"),
            .query = S(""),
            .version = S("HTTP/1.1"),
            .file = S("/srv/site/big.py"),
            .remote_addr = S("203.0.113.9"),
            .remote_port = 40000,
            .server_addr = S("198.51.100.2"),
            .server_port = 8443,
            .params = NULL, .nparams = 0,
            .headers = req_body_file_headers, .nheaders = 1,
            .body = S("/tmp/krait-spool/body-000006"),
        },
        .hex = "a20000000106000000050100000003000000505554040000002f626967000000000800000048545450"
               "2f312e31100000002f7372762f736974652f6269672e70790b0000003230332e302e3131332e39409c"
               "0c0000003139382e35312e3130302e32fb20000001000e000000636f6e74656e742d6c656e67746808"
               "00000032303030303030301c0000002f746d702f6b726169742d73706f6f6c2f626f64792d30303030"
               "3036",
    },
    {
        .name = "request/websocket",
        .r = {
            .id = 4294967295u, .flags = 2, .route = 2147483647,
            .method = S("WEBSOCKET"),
            .path = S("/chat/room1"),
            .query = S(""),
            .version = S("HTTP/1.1"),
            .file = S("/srv/site/chat.py"),
            .remote_addr = S("127.0.0.1"),
            .remote_port = 2,
            .server_addr = S("127.0.0.1"),
            .server_port = 1,
            .params = req_websocket_params, .nparams = 2,
            .headers = req_websocket_headers, .nheaders = 2,
            .body = S(""),
        },
        .hex = "d300000001ffffffff02ffffff7f09000000574542534f434b45540b0000002f636861742f726f6f6d"
               "310000000008000000485454502f312e31110000002f7372762f736974652f636861742e7079090000"
               "003132372e302e302e310200090000003132372e302e302e310100020004000000726f6f6d05000000"
               "726f6f6d3100000000000000000200070000007570677261646509000000776562736f636b65741100"
               "00007365632d776562736f636b65742d6b6579180000006447686c49484e68625842735a5342756232"
               "356a5a513d3d00000000",
    },
    {
        .name = "request/route_min_nul_bytes",
        .r = {
            .id = 9u, .flags = 0, .route = INT32_MIN,
            .method = S("GET"),
            .path = S("/a\000b"),
            .query = S("\000"),
            .version = S("HTTP/1.1"),
            .file = S(""),
            .remote_addr = S(""),
            .remote_port = 0,
            .server_addr = S("unix"),
            .server_port = 0,
            .params = NULL, .nparams = 0,
            .headers = req_route_min_nul_bytes_headers, .nheaders = 1,
            .body = S("\000"),
        },
        .hex = "570000000109000000000000008003000000474554040000002f610062010000000008000000485454"
               "502f312e310000000000000000000004000000756e697800000000010005000000782d6e756c030000"
               "006100620100000000",
    },
    {
        .name = "request/cache_question",
        .r = {
            .id = 5u, .flags = 16, .route = 0,
            .method = S(""),
            .path = S("css/site.css"),
            .query = S(""),
            .version = S(""),
            .file = S(""),
            .remote_addr = S(""),
            .remote_port = 0,
            .server_addr = S(""),
            .server_port = 0,
            .params = NULL, .nparams = 0,
            .headers = NULL, .nheaders = 0,
            .body = S(""),
        },
        .hex = "3e00000001050000001000000000000000000c0000006373732f736974652e63737300000000000000"
               "00000000000000000000000000000000000000000000000000",
    },
};

static const krait__slice resp_inline_ok_headers[] = {
    S("Content-Type"), S("text/html; charset=utf-8"),
};
static const krait__slice resp_binary_body_headers[] = {
    S("Content-Type"), S("image/png"),
};
static const krait__slice resp_file_headers[] = {
    S("Content-Type"), S("application/x-iso9660-image"),
};
static const krait__slice resp_stream_head_headers[] = {
    S("Content-Type"), S("text/event-stream"),
};
static const krait__slice resp_many_headers_headers[] = {
    S("Set-Cookie"), S("c0=v0; Path=/"),
    S("Set-Cookie"), S("c1=v1; Path=/"),
    S("Set-Cookie"), S("c2=v2; Path=/"),
    S("Set-Cookie"), S("c3=v3; Path=/"),
    S("Set-Cookie"), S("c4=v4; Path=/"),
    S("Set-Cookie"), S("c5=v5; Path=/"),
    S("Set-Cookie"), S("c6=v6; Path=/"),
    S("Set-Cookie"), S("c7=v7; Path=/"),
    S("Set-Cookie"), S("c8=v8; Path=/"),
    S("Set-Cookie"), S("c9=v9; Path=/"),
    S("Set-Cookie"), S("c10=v10; Path=/"),
    S("Set-Cookie"), S("c11=v11; Path=/"),
    S("Set-Cookie"), S("c12=v12; Path=/"),
    S("Set-Cookie"), S("c13=v13; Path=/"),
    S("Set-Cookie"), S("c14=v14; Path=/"),
    S("Set-Cookie"), S("c15=v15; Path=/"),
    S("Set-Cookie"), S("c16=v16; Path=/"),
    S("Set-Cookie"), S("c17=v17; Path=/"),
    S("Set-Cookie"), S("c18=v18; Path=/"),
    S("Set-Cookie"), S("c19=v19; Path=/"),
    S("Set-Cookie"), S("c20=v20; Path=/"),
    S("Set-Cookie"), S("c21=v21; Path=/"),
    S("Set-Cookie"), S("c22=v22; Path=/"),
    S("Set-Cookie"), S("c23=v23; Path=/"),
    S("Set-Cookie"), S("c24=v24; Path=/"),
    S("Set-Cookie"), S("c25=v25; Path=/"),
    S("Set-Cookie"), S("c26=v26; Path=/"),
    S("Set-Cookie"), S("c27=v27; Path=/"),
    S("Set-Cookie"), S("c28=v28; Path=/"),
    S("Set-Cookie"), S("c29=v29; Path=/"),
    S("X-Empty"), S(""),
};
static const krait__slice resp_unicode_header_100_headers[] = {
    S("X-Name"), S("na\303\257ve \346\227\245\346\234\254"),
};
static const krait__slice resp_non_utf8_header_headers[] = {
    S("X-Raw"), S("\377\376"),
};

static const resp_vector resp_vectors[] = {
    {
        .name = "response/inline_ok",
        .type = KRAIT__IPC_RESPONSE, .id = 1u, .status = 200, .body_kind = 0,
        .headers = resp_inline_ok_headers, .nheaders = 1,
        .body = S("<p>hi</p>"),
        .hex = "430000000201000000c8000001000c000000436f6e74656e742d5479706518000000746578742f6874"
               "6d6c3b20636861727365743d7574662d38090000003c703e68693c2f703e",
    },
    {
        .name = "response/empty_204",
        .type = KRAIT__IPC_RESPONSE, .id = 0u, .status = 204, .body_kind = 0,
        .headers = NULL, .nheaders = 0,
        .body = S(""),
        .hex = "0e0000000200000000cc0000000000000000",
    },
    {
        .name = "response/binary_body",
        .type = KRAIT__IPC_RESPONSE, .id = 16909060u, .status = 200, .body_kind = 0,
        .headers = resp_binary_body_headers, .nheaders = 1,
        .body = S("\000\001\002\003\004\005\006\007\010\011\012\013\014\015\016\017"
          "\020\021\022\023\024\025\026\027\030\031\032\033\034\035\036\037 !"
          "\042#$%&'()*+,-./0123456789:;<=>\077@ABCDEFGHIJKLMNOPQRSTUVWXYZ["
          "\134]^_`abcdefghijklmnopqrstuvwxyz{|}~\177\200\201\202\203\204\205"
          "\206\207\210\211\212\213\214\215\216\217\220\221\222\223\224\225"
          "\226\227\230\231\232\233\234\235\236\237\240\241\242\243\244\245"
          "\246\247\250\251\252\253\254\255\256\257\260\261\262\263\264\265"
          "\266\267\270\271\272\273\274\275\276\277\300\301\302\303\304\305"
          "\306\307\310\311\312\313\314\315\316\317\320\321\322\323\324\325"
          "\326\327\330\331\332\333\334\335\336\337\340\341\342\343\344\345"
          "\346\347\350\351\352\353\354\355\356\357\360\361\362\363\364\365"
          "\366\367\370\371\372\373\374\375\376\377\000\001\002\003\004\005"
          "\006\007\010\011\012\013\014\015\016\017\020\021\022\023\024\025"
          "\026\027\030\031\032\033\034\035\036\037 !\042#$%&'()*+,-./0123456"
          "789:;<=>\077@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\134]^_`abcdefghijklmnopqr"
          "stuvwxyz{|}~\177\200\201\202\203\204\205\206\207\210\211\212\213"
          "\214\215\216\217\220\221\222\223\224\225\226\227\230\231\232\233"
          "\234\235\236\237\240\241\242\243\244\245\246\247\250\251\252\253"
          "\254\255\256\257\260\261\262\263\264\265\266\267\270\271\272\273"
          "\274\275\276\277\300\301\302\303\304\305\306\307\310\311\312\313"
          "\314\315\316\317\320\321\322\323\324\325\326\327\330\331\332\333"
          "\334\335\336\337\340\341\342\343\344\345\346\347\350\351\352\353"
          "\354\355\356\357\360\361\362\363\364\365\366\367\370\371\372\373"
          "\374\375\376\377"),
        .hex = "2b0200000204030201c8000001000c000000436f6e74656e742d5479706509000000696d6167652f70"
               "6e6700020000000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122"
               "232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b"
               "4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f7071727374"
               "75767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d"
               "9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6"
               "c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
               "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f101112131415161718"
               "191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f4041"
               "42434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a"
               "6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f90919293"
               "9495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbc"
               "bdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5"
               "e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
    },
    {
        .name = "response/file",
        .type = KRAIT__IPC_RESPONSE, .id = 4u, .status = 200, .body_kind = 1,
        .headers = resp_file_headers, .nheaders = 1,
        .body = S("/srv/site/static/big.iso"),
        .hex = "550000000204000000c8000101000c000000436f6e74656e742d547970651b0000006170706c696361"
               "74696f6e2f782d69736f393636302d696d616765180000002f7372762f736974652f7374617469632f"
               "6269672e69736f",
    },
    {
        .name = "response/stream_head",
        .type = KRAIT__IPC_RESPONSE, .id = 5u, .status = 200, .body_kind = 2,
        .headers = resp_stream_head_headers, .nheaders = 1,
        .body = S(""),
        .hex = "330000000205000000c8000201000c000000436f6e74656e742d5479706511000000746578742f6576"
               "656e742d73747265616d00000000",
    },
    {
        .name = "response/chunk",
        .type = KRAIT__IPC_CHUNK, .id = 5u, .status = 0, .body_kind = 0,
        .headers = NULL, .nheaders = 0,
        .body = S("data: hello\012\012"),
        .hex = "1600000003050000000d000000646174613a2068656c6c6f0a0a",
    },
    {
        .name = "response/empty_chunk",
        .type = KRAIT__IPC_CHUNK, .id = 5u, .status = 0, .body_kind = 0,
        .headers = NULL, .nheaders = 0,
        .body = S(""),
        .hex = "09000000030500000000000000",
    },
    {
        .name = "response/end",
        .type = KRAIT__IPC_END, .id = 5u, .status = 0, .body_kind = 0,
        .headers = NULL, .nheaders = 0,
        .body = S(""),
        .hex = "050000000405000000",
    },
    {
        .name = "response/many_headers",
        .type = KRAIT__IPC_RESPONSE, .id = 6u, .status = 999, .body_kind = 0,
        .headers = resp_many_headers_headers, .nheaders = 31,
        .body = S(""),
        .hex = "e70300000206000000e703001f000a0000005365742d436f6f6b69650d00000063303d76303b205061"
               "74683d2f0a0000005365742d436f6f6b69650d00000063313d76313b20506174683d2f0a0000005365"
               "742d436f6f6b69650d00000063323d76323b20506174683d2f0a0000005365742d436f6f6b69650d00"
               "000063333d76333b20506174683d2f0a0000005365742d436f6f6b69650d00000063343d76343b2050"
               "6174683d2f0a0000005365742d436f6f6b69650d00000063353d76353b20506174683d2f0a00000053"
               "65742d436f6f6b69650d00000063363d76363b20506174683d2f0a0000005365742d436f6f6b69650d"
               "00000063373d76373b20506174683d2f0a0000005365742d436f6f6b69650d00000063383d76383b20"
               "506174683d2f0a0000005365742d436f6f6b69650d00000063393d76393b20506174683d2f0a000000"
               "5365742d436f6f6b69650f0000006331303d7631303b20506174683d2f0a0000005365742d436f6f6b"
               "69650f0000006331313d7631313b20506174683d2f0a0000005365742d436f6f6b69650f0000006331"
               "323d7631323b20506174683d2f0a0000005365742d436f6f6b69650f0000006331333d7631333b2050"
               "6174683d2f0a0000005365742d436f6f6b69650f0000006331343d7631343b20506174683d2f0a0000"
               "005365742d436f6f6b69650f0000006331353d7631353b20506174683d2f0a0000005365742d436f6f"
               "6b69650f0000006331363d7631363b20506174683d2f0a0000005365742d436f6f6b69650f00000063"
               "31373d7631373b20506174683d2f0a0000005365742d436f6f6b69650f0000006331383d7631383b20"
               "506174683d2f0a0000005365742d436f6f6b69650f0000006331393d7631393b20506174683d2f0a00"
               "00005365742d436f6f6b69650f0000006332303d7632303b20506174683d2f0a0000005365742d436f"
               "6f6b69650f0000006332313d7632313b20506174683d2f0a0000005365742d436f6f6b69650f000000"
               "6332323d7632323b20506174683d2f0a0000005365742d436f6f6b69650f0000006332333d7632333b"
               "20506174683d2f0a0000005365742d436f6f6b69650f0000006332343d7632343b20506174683d2f0a"
               "0000005365742d436f6f6b69650f0000006332353d7632353b20506174683d2f0a0000005365742d43"
               "6f6f6b69650f0000006332363d7632363b20506174683d2f0a0000005365742d436f6f6b69650f0000"
               "006332373d7632373b20506174683d2f0a0000005365742d436f6f6b69650f0000006332383d763238"
               "3b20506174683d2f0a0000005365742d436f6f6b69650f0000006332393d7632393b20506174683d2f"
               "07000000582d456d7074790000000000000000",
    },
    {
        .name = "response/unicode_header_100",
        .type = KRAIT__IPC_RESPONSE, .id = 4294967295u, .status = 100, .body_kind = 0,
        .headers = resp_unicode_header_100_headers, .nheaders = 1,
        .body = S(""),
        .hex = "2900000002ffffffff640000010006000000582d4e616d650d0000006e61c3af766520e697a5e69cac"
               "00000000",
    },
    {
        .name = "response/non_utf8_header",
        .type = KRAIT__IPC_RESPONSE, .id = 8u, .status = 404, .body_kind = 0,
        .headers = resp_non_utf8_header_headers, .nheaders = 1,
        .body = S("\377"),
        .hex = "1e0000000208000000940100010005000000582d52617702000000fffe01000000ff",
    },
};

static const krait__slice stream_split_100_bytes_headers[] = {
    S("Content-Type"), S("application/octet-stream"),
};
static const krait__slice stream_fits_one_frame_headers[] = {
    S("Location"), S("/x"),
};

static const stream_vector stream_vectors[] = {
    {
        .name = "stream/split_100_bytes",
        .id = 9u, .status = 200, .nframes = 4,
        .headers = stream_split_100_bytes_headers, .nheaders = 1,
        .body = S("\000\001\002\003\004\005\006\007\010\011\012\013\014\015\016\017"
          "\020\021\022\023\024\025\026\027\030\031\032\033\034\035\036\037 !"
          "\042#$%&'()*+,-./0123456789:;<=>\077@ABCDEFGHIJKLMNOPQRSTUVWXYZ["
          "\134]^_`abc"),
        .hex = "3a0000000209000000c8000201000c000000436f6e74656e742d54797065180000006170706c696361"
               "74696f6e2f6f637465742d73747265616d000000003c00000003090000003300000000010203040506"
               "0708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
               "3031323a000000030900000031000000333435363738393a3b3c3d3e3f404142434445464748494a4b"
               "4c4d4e4f505152535455565758595a5b5c5d5e5f60616263050000000409000000",
    },
    {
        .name = "stream/fits_one_frame",
        .id = 10u, .status = 201, .nframes = 1,
        .headers = stream_fits_one_frame_headers, .nheaders = 1,
        .body = S("0123456789"),
        .hex = "2a000000020a000000c900000100080000004c6f636174696f6e020000002f780a0000003031323334"
               "3536373839",
    },
    {
        .name = "stream/exact_chunks",
        .id = 11u, .status = 200, .nframes = 6,
        .headers = NULL, .nheaders = 0,
        .body = S("\000\001\002\003\004\005\006\007\010\011\012\013\014\015\016\017"
          "\020\021\022\023"),
        .hex = "0e000000020b000000c800020000000000000e000000030b0000000500000000010203040e00000003"
               "0b0000000500000005060708090e000000030b000000050000000a0b0c0d0e0e000000030b00000005"
               "0000000f1011121305000000040b000000",
    },
};

static const malformed_vector malformed_vectors[] = {
    { .name = "malformed/length_under_5",
      .hex = "0400000004000000" },
    { .name = "malformed/length_zero",
      .hex = "00000000" },
    { .name = "malformed/length_over_max",
      .hex = "fdffff03" },
    { .name = "malformed/length_ffffffff",
      .hex = "ffffffff" },
    { .name = "malformed/type_0",
      .hex = "050000000001000000" },
    { .name = "malformed/type_request",
      .hex = "58000000010100000000ffffffff03000000474554010000002f0000000008000000485454502f312e31"
             "00000000090000003132372e302e302e3131d40000010004000000686f73740b0000006578616d706c65"
             "2e636f6d00000000" },
    { .name = "malformed/type_5",
      .hex = "050000000501000000" },
    { .name = "malformed/type_255_prefix_only",
      .hex = "64000000ff" },
    { .name = "malformed/end_with_payload",
      .hex = "06000000040100000000" },
    { .name = "malformed/chunk_string_past_end",
      .hex = "0e00000003010000000600000068656c6c6f" },
    { .name = "malformed/chunk_string_len_ffffffff",
      .hex = "0c0000000301000000ffffffff616263" },
    { .name = "malformed/chunk_short_length_field",
      .hex = "0700000003010000000100" },
    { .name = "malformed/chunk_trailing_byte",
      .hex = "0c000000030100000002000000686921" },
    { .name = "malformed/response_truncated_fixed",
      .hex = "090000000201000000c8000000" },
    { .name = "malformed/response_trailing_byte",
      .hex = "100000000201000000c800000000010000007800" },
    { .name = "malformed/status_0",
      .hex = "0e0000000201000000000000000000000000" },
    { .name = "malformed/status_99",
      .hex = "0e0000000201000000630000000000000000" },
    { .name = "malformed/status_1000",
      .hex = "0e0000000201000000e80300000000000000" },
    { .name = "malformed/status_65535",
      .hex = "0e0000000201000000ffff00000000000000" },
    { .name = "malformed/body_kind_3",
      .hex = "0e0000000201000000c80003000000000000" },
    { .name = "malformed/body_kind_255",
      .hex = "0e0000000201000000c800ff000000000000" },
    { .name = "malformed/stream_with_body",
      .hex = "0f0000000201000000c8000200000100000078" },
    { .name = "malformed/file_empty_path",
      .hex = "0e0000000201000000c80001000000000000" },
    { .name = "malformed/file_path_with_nul",
      .hex = "1f0000000201000000c800010000110000002f6574632f706173737764002e68746d6c" },
    { .name = "malformed/header_count_too_high",
      .hex = "220000000201000000c800000300010000006101000000310100000062010000003200000000" },
    { .name = "malformed/header_count_too_low",
      .hex = "220000000201000000c800000100010000006101000000310100000062010000003200000000" },
    { .name = "malformed/header_count_65535_empty",
      .hex = "0e0000000201000000c80000ffff00000000" },
    { .name = "malformed/header_name_past_end",
      .hex = "110000000201000000c80000010032000000616263" },
    { .name = "malformed/header_value_missing",
      .hex = "120000000201000000c800000100040000006e616d65" },
    { .name = "malformed/body_string_missing",
      .hex = "0a0000000201000000c800000000" },
    { .name = "malformed/cache_answer_no_store_and_long",
      .hex = "090000000b0900000009000000" },
    { .name = "malformed/cache_answer_private_and_public",
      .hex = "090000000b0900000006000000" },
    { .name = "malformed/cache_answer_unknown_bit",
      .hex = "090000000b0900000010000000" },
    { .name = "malformed/cache_answer_short",
      .hex = "080000000b09000000040000" },
    { .name = "malformed/cache_answer_trailing_byte",
      .hex = "0a0000000b090000000400000000" },
};
/* ---- END generated ---- */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decode a hex string into a fresh malloc'd buffer; *len receives its size. */
static uint8_t *unhex(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    uint8_t *out = malloc(n ? n : 1);
    if (!out)
        abort();
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    *len = n;
    return out;
}

static int slice_eq(krait__slice a, const void *p, size_t n)
{
    return a.n == n && (n == 0 || memcmp(a.p, p, n) == 0);
}

static int slice_same(krait__slice a, krait__slice b)
{
    return slice_eq(a, b.p, b.n);
}

/* Does s lie entirely inside buf[0..len)? An empty slice may sit at buf + len, or be NULL
 * (the body of an END frame). */
static int slice_inside(krait__slice s, const uint8_t *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)s.p;
    if (p == NULL)
        return s.n == 0;
    return p >= buf && p <= buf + len && s.n <= (size_t)(buf + len - p);
}

static void lower_ascii(char *dst, krait__slice s)
{
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        dst[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
}

/* Compare parsed header pairs (starting at f->headers_at) with expected name/value slices. */
static int pairs_match(const krait__ipc_frame *f, const krait__slice *want, size_t nwant)
{
    if (f->nheaders != nwant)
        return 0;
    const uint8_t *at = f->headers_at;
    for (size_t i = 0; i < nwant; i++) {
        krait__slice name, value;
        krait__ipc_next_pair(&at, &name, &value);
        if (!slice_same(name, want[2 * i]) || !slice_same(value, want[2 * i + 1]))
            return 0;
    }
    return 1;
}

/* A growable byte buffer for frames built by hand in the tests. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} bbuf;

static void bb_bytes(bbuf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void bb_u8(bbuf *b, uint8_t v)
{
    bb_bytes(b, &v, 1);
}

static void bb_u16(bbuf *b, uint16_t v)
{
    uint8_t le[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
    bb_bytes(b, le, 2);
}

static void bb_u32(bbuf *b, uint32_t v)
{
    uint8_t le[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    bb_bytes(b, le, 4);
}

static void bb_str(bbuf *b, const char *s)
{
    bb_u32(b, (uint32_t)strlen(s));
    bb_bytes(b, s, strlen(s));
}

/* Start a frame: the length is patched by bb_end. */
static void bb_begin(bbuf *b, uint8_t type, uint32_t id)
{
    b->n = 0;
    bb_u32(b, 0);
    bb_u8(b, type);
    bb_u32(b, id);
}

static void bb_end(bbuf *b)
{
    uint32_t v = (uint32_t)(b->n - 4);
    uint8_t le[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    memcpy(b->p, le, 4);
}

/* Parse buf[0..len) placed against the guard page. */
static long parse_guarded(const uint8_t *buf, size_t len, krait__ipc_frame *f)
{
    guarded g = guarded_copy(buf, len);
    long rc = krait__ipc_parse((const uint8_t *)g.data, len, f);
    guarded_free(g);
    return rc;
}

/* A test-side decoder of REQUEST frames (the core never parses them; this checks what
 * krait__ipc_encode_request wrote, field by field). Returns 0, or -1 if anything is off. */
#define MAX_TEST_PAIRS 128

typedef struct {
    uint32_t id;
    uint8_t flags;
    int32_t route;
    krait__slice str[6];  /* method, path, query, version, file, remote_addr */
    uint16_t remote_port;
    krait__slice server_addr;
    uint16_t server_port;
    size_t nparams, nheaders;
    krait__slice params[2 * MAX_TEST_PAIRS], headers[2 * MAX_TEST_PAIRS];
    krait__slice body;
} decoded_request;

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int rd_str(const uint8_t **p, const uint8_t *end, krait__slice *s)
{
    if (end - *p < 4)
        return -1;
    size_t n = rd32(*p);
    if ((size_t)(end - *p - 4) < n)
        return -1;
    s->p = (const char *)*p + 4;
    s->n = n;
    *p += 4 + n;
    return 0;
}

static int rd_pairs(const uint8_t **p, const uint8_t *end, krait__slice *kv, size_t *n)
{
    if (end - *p < 2)
        return -1;
    *n = (size_t)((*p)[0] | (*p)[1] << 8);
    *p += 2;
    if (*n > MAX_TEST_PAIRS)
        return -1;
    for (size_t i = 0; i < 2 * *n; i++)
        if (rd_str(p, end, &kv[i]) < 0)
            return -1;
    return 0;
}

static int decode_request(const uint8_t *buf, size_t len, decoded_request *d)
{
    if (len < KRAIT__IPC_HEADER + 5 || rd32(buf) != len - 4 || buf[4] != KRAIT__IPC_REQUEST)
        return -1;
    const uint8_t *p = buf + 5, *end = buf + len;
    d->id = rd32(p);
    d->flags = p[4];
    d->route = (int32_t)rd32(p + 5);
    p += 9;
    for (int i = 0; i < 6; i++)
        if (rd_str(&p, end, &d->str[i]) < 0)
            return -1;
    if (end - p < 2)
        return -1;
    d->remote_port = (uint16_t)(p[0] | p[1] << 8);
    p += 2;
    if (rd_str(&p, end, &d->server_addr) < 0 || end - p < 2)
        return -1;
    d->server_port = (uint16_t)(p[0] | p[1] << 8);
    p += 2;
    if (rd_pairs(&p, end, d->params, &d->nparams) < 0 ||
        rd_pairs(&p, end, d->headers, &d->nheaders) < 0 || rd_str(&p, end, &d->body) < 0)
        return -1;
    return p == end ? 0 : -1;
}

/* Does the decoded request carry exactly r's fields (header names lower-cased)? */
static int request_matches(const decoded_request *d, const krait__ipc_request *r)
{
    const krait__slice *want[6] = { &r->method, &r->path, &r->query, &r->version, &r->file,
                                    &r->remote_addr };
    if (d->id != r->id || d->flags != r->flags || d->route != r->route ||
        d->remote_port != r->remote_port || d->server_port != r->server_port ||
        !slice_same(d->server_addr, r->server_addr) || d->nparams != r->nparams ||
        d->nheaders != r->nheaders || !slice_same(d->body, r->body))
        return 0;
    for (int i = 0; i < 6; i++)
        if (!slice_same(d->str[i], *want[i]))
            return 0;
    for (size_t i = 0; i < 2 * r->nparams; i++)
        if (!slice_same(d->params[i], r->params[i]))
            return 0;
    for (size_t i = 0; i < 2 * r->nheaders; i++) {
        krait__slice w = r->headers[i];
        char low[256];
        if (i % 2 == 0 && w.n <= sizeof low) {
            lower_ascii(low, w);
            w.p = low;
        }
        if (!slice_same(d->headers[i], w))
            return 0;
    }
    return 1;
}

/* ---- request encoding ---- */

static void test_request_vectors(void)
{
    for (size_t v = 0; v < COUNT(req_vectors); v++) {
        const req_vector *t = &req_vectors[v];
        size_t want_len;
        uint8_t *want = unhex(t->hex, &want_len);
        size_t size = krait__ipc_request_size(&t->r);
        ok(size == want_len, "%s: size %zu, golden %zu", t->name, size, want_len);

        /* Encode into a buffer of exactly the right size that ends at the guard page, so a
         * single byte written past the frame faults. */
        guarded g = guarded_copy(want, want_len);
        memset(g.data, 0xAA, want_len);
        long n = krait__ipc_encode_request(&t->r, (uint8_t *)g.data, want_len);
        ok(n == (long)want_len, "%s: encoded %ld bytes", t->name, n);
        ok(n > 0 && memcmp(g.data, want, want_len) == 0, "%s: bytes differ from golden",
           t->name);
        ok(krait__ipc_encode_request(&t->r, (uint8_t *)g.data, want_len - 1) == -1,
           "%s: cap one short must fail", t->name);
        ok(krait__ipc_encode_request(&t->r, NULL, 0) == -1, "%s: cap 0", t->name);

        decoded_request *d = malloc(sizeof *d);
        ok(d && decode_request((const uint8_t *)g.data, want_len, d) == 0 &&
           request_matches(d, &t->r), "%s: decoded fields differ", t->name);
        free(d);

        /* A REQUEST is core -> worker only: the worker-frame parser refuses it. */
        krait__ipc_frame f;
        ok(krait__ipc_parse((const uint8_t *)g.data, want_len, &f) == -1,
           "%s: parse of a REQUEST must fail", t->name);
        guarded_free(g);
        free(want);
    }
}

static void test_request_encoding_details(void)
{
    static const krait__slice hdr[] = {
        S("Content-TYPE"), S("Text/HTML"),
        S("\303\204B-Z@[`{"), S("V"),  /* "ÄB-Z@[`{": only A-Z change, UTF-8 bytes do not */
    };
    static const krait__slice par[] = { S("Name"), S("Value") };
    krait__ipc_request r = {
        .id = 0x11223344u, .flags = 0xff, .route = -1, .method = S("GET"), .path = S("/"),
        .remote_port = 0x1234, .server_addr = S("::1"), .server_port = 0xabcd, .params = par, .nparams = 1, .headers = hdr, .nheaders = 2,
    };
    uint8_t out[256];
    long n = krait__ipc_encode_request(&r, out, sizeof out);
    ok(n == (long)krait__ipc_request_size(&r), "size agrees: %ld", n);
    ok(memcmp(out, (uint8_t[]){ (uint8_t)(n - 4), 0, 0, 0, 1, 0x44, 0x33, 0x22, 0x11, 0xff,
                                0xff, 0xff, 0xff, 0xff }, 14) == 0,
       "header, flags and route -1 are little-endian two's complement");
    decoded_request *d = malloc(sizeof *d);
    ok(d && decode_request(out, (size_t)n, d) == 0, "decodes");
    if (d && d->nheaders == 2) {
        ok(slice_eq(d->headers[0], "content-type", 12), "ASCII header name lower-cased");
        ok(slice_eq(d->headers[1], "Text/HTML", 9), "header value untouched");
        ok(slice_eq(d->headers[2], "\303\204b-z@[`{", 9), "only A-Z lower-cased");
        ok(slice_eq(d->params[0], "Name", 4), "param names keep their case");
        ok(d->remote_port == 0x1234 && d->flags == 0xff, "port and flags");
        ok(slice_eq(d->server_addr, "::1", 3) && d->server_port == 0xabcd,
           "server address and port after the remote port");
    }
    free(d);

    /* NULL slices with zero length are fine everywhere. */
    krait__ipc_request empty = { .route = 0 };
    ok(krait__ipc_encode_request(&empty, out, sizeof out) == 54, "all-empty request is 54 bytes");
}

static void test_request_limits(void)
{
    /* Pair counts: 65535 is the most a u16 can say; 65536 must be refused. */
    size_t npairs = 65536;
    krait__slice *kv = calloc(2 * npairs, sizeof *kv);
    size_t cap = 16u << 20;
    uint8_t *out = malloc(cap);
    if (!kv || !out)
        abort();
    krait__ipc_request r = { .headers = kv, .nheaders = npairs };
    ok(krait__ipc_encode_request(&r, out, cap) == -1, "65536 headers refused");
    r.nheaders = 65535;
    long n = krait__ipc_encode_request(&r, out, cap);
    ok(n > 0 && (size_t)n == krait__ipc_request_size(&r), "65535 headers accepted: %ld", n);
    r = (krait__ipc_request){ .params = kv, .nparams = npairs };
    ok(krait__ipc_encode_request(&r, out, cap) == -1, "65536 params refused");
    free(kv);

    /* Frame size: exactly KRAIT__IPC_MAX_FRAME is allowed, one more byte is not. */
    krait__ipc_request empty = { .route = 0 };
    size_t base = krait__ipc_request_size(&empty);
    size_t body_max = KRAIT__IPC_MAX_FRAME - base;
    char *body = calloc(1, body_max + 1);
    uint8_t *big = malloc(KRAIT__IPC_MAX_FRAME + 1);
    if (!body || !big)
        abort();
    r = (krait__ipc_request){ .body = { body, body_max } };
    ok(krait__ipc_request_size(&r) == KRAIT__IPC_MAX_FRAME, "size at the limit");
    ok(krait__ipc_encode_request(&r, big, KRAIT__IPC_MAX_FRAME + 1) == KRAIT__IPC_MAX_FRAME,
       "a frame of exactly KRAIT__IPC_MAX_FRAME bytes encodes");
    r.body.n++;
    ok(krait__ipc_encode_request(&r, big, KRAIT__IPC_MAX_FRAME + 1) == -1,
       "one byte over the frame limit is refused");

    /* Absurd lengths saturate instead of wrapping, and nothing is read from the pointer. */
    r.body = (krait__slice){ "x", SIZE_MAX };
    ok(krait__ipc_request_size(&r) == SIZE_MAX, "size saturates");
    ok(krait__ipc_encode_request(&r, out, cap) == -1, "saturated size refused");
    r.body = (krait__slice){ "x", SIZE_MAX - 20 };
    r.path = (krait__slice){ "x", SIZE_MAX - 20 };
    ok(krait__ipc_request_size(&r) == SIZE_MAX, "sum of two huge slices saturates");
    free(body);
    free(big);
    free(out);
}

/* ---- worker-frame parsing ---- */

static void check_prefixes(const char *name, const uint8_t *buf, size_t len)
{
    int bad = 0;
    for (size_t k = 0; k < len; k++) {
        krait__ipc_frame f;
        if (parse_guarded(buf, k, &f) != KRAIT__IPC_NEED_MORE)
            bad++;
    }
    ok(bad == 0, "%s: %d prefixes did not give NEED_MORE", name, bad);
}

static void test_response_vectors(void)
{
    for (size_t v = 0; v < COUNT(resp_vectors); v++) {
        const resp_vector *t = &resp_vectors[v];
        size_t len;
        uint8_t *buf = unhex(t->hex, &len);
        guarded g = guarded_copy(buf, len);
        const uint8_t *in = (const uint8_t *)g.data;
        krait__ipc_frame f;
        long n = krait__ipc_parse(in, len, &f);
        ok(n == (long)len, "%s: parse returned %ld of %zu", t->name, n, len);
        if (n == (long)len) {
            ok(f.type == t->type && f.id == t->id, "%s: type %u id %" PRIu32, t->name, f.type,
               f.id);
            ok(f.status == t->status && f.body_kind == t->body_kind, "%s: status %u kind %u",
               t->name, f.status, f.body_kind);
            ok(slice_same(f.body, t->body), "%s: body", t->name);
            ok(slice_inside(f.body, in, len), "%s: body slice inside the frame", t->name);
            ok(pairs_match(&f, t->headers, t->nheaders), "%s: headers", t->name);
        }
        guarded_free(g);
        check_prefixes(t->name, buf, len);

        /* Followed by the start of another frame: still exactly one frame consumed. */
        uint8_t *two = malloc(len + 7);
        memcpy(two, buf, len);
        memcpy(two + len, buf, 7 < len ? 7 : len);
        ok(parse_guarded(two, len + (7 < len ? 7 : len), &f) == (long)len,
           "%s: a following frame is not consumed", t->name);
        free(two);
        free(buf);
    }
}

/* Receive a whole stream one byte at a time, the way the core's read buffer fills up, and
 * check the frames come out exactly as the golden vector says. */
static void test_stream_vectors(void)
{
    for (size_t v = 0; v < COUNT(stream_vectors); v++) {
        const stream_vector *t = &stream_vectors[v];
        size_t len;
        uint8_t *buf = unhex(t->hex, &len);
        uint8_t *body = malloc(t->body.n + 1);
        size_t body_n = 0, nframes = 0, used = 0;
        int bad = 0, ended = 0;
        for (size_t have = 1; have <= len; have++) {
            krait__ipc_frame f;
            guarded g = guarded_copy(buf + used, have - used);
            long n = krait__ipc_parse((const uint8_t *)g.data, have - used, &f);
            if (n == KRAIT__IPC_NEED_MORE) {
                guarded_free(g);
                continue;
            }
            if (n < 0) {
                guarded_free(g);
                bad++;
                break;
            }
            used += (size_t)n;
            if (nframes == 0) {
                bad += f.type != KRAIT__IPC_RESPONSE || f.status != t->status || f.id != t->id;
                bad += !pairs_match(&f, t->headers, t->nheaders);
                if (t->nframes == 1) {
                    bad += f.body_kind != KRAIT__BODY_INLINE;
                    memcpy(body, f.body.p, f.body.n);
                    body_n = f.body.n;
                } else {
                    bad += f.body_kind != KRAIT__BODY_STREAM || f.body.n != 0;
                }
            } else if (f.type == KRAIT__IPC_CHUNK && !ended) {
                bad += f.id != t->id || body_n + f.body.n > t->body.n;
                if (body_n + f.body.n <= t->body.n)
                    memcpy(body + body_n, f.body.p, f.body.n);
                body_n += f.body.n;
            } else if (f.type == KRAIT__IPC_END && !ended) {
                ended = 1;
            } else {
                bad++;
            }
            guarded_free(g);
            nframes++;
        }
        ok(!bad && used == len, "%s: stream parsed byte by byte (%d bad, %zu of %zu)", t->name,
           bad, used, len);
        ok(nframes == t->nframes && (t->nframes == 1 || ended), "%s: %zu frames", t->name,
           nframes);
        ok(body_n == t->body.n && memcmp(body, t->body.p, body_n) == 0, "%s: body", t->name);
        free(body);
        free(buf);
    }
}

static void test_malformed_vectors(void)
{
    for (size_t v = 0; v < COUNT(malformed_vectors); v++) {
        const malformed_vector *t = &malformed_vectors[v];
        size_t len;
        uint8_t *buf = unhex(t->hex, &len);
        krait__ipc_frame f, before;
        memset(&f, 0x5A, sizeof f);
        before = f;
        ok(parse_guarded(buf, len, &f) == -1, "%s: must be malformed", t->name);
        ok(memcmp(&f, &before, sizeof f) == 0, "%s: *f untouched on error", t->name);
        /* Prefixes: NEED_MORE until the flaw is visible, then -1 for every longer prefix. */
        int seen_error = 0, flip = 0;
        for (size_t k = 0; k <= len; k++) {
            long rc = parse_guarded(buf, k, &f);
            if (rc == -1)
                seen_error = 1;
            else if (rc != KRAIT__IPC_NEED_MORE || seen_error)
                flip++;
        }
        ok(flip == 0, "%s: prefix answers are not monotonic", t->name);
        free(buf);
    }
}

static void test_early_rejection(void)
{
    krait__ipc_frame f;
    uint8_t hdr[9] = { 0 };
    /* The largest allowed length field with only the header present: wait for the rest. */
    uint32_t max_len = KRAIT__IPC_MAX_FRAME - 4;
    hdr[0] = (uint8_t)max_len;
    hdr[1] = (uint8_t)(max_len >> 8);
    hdr[2] = (uint8_t)(max_len >> 16);
    hdr[3] = (uint8_t)(max_len >> 24);
    hdr[4] = KRAIT__IPC_CHUNK;
    ok(parse_guarded(hdr, 9, &f) == KRAIT__IPC_NEED_MORE, "max length waits for more");
    ok(parse_guarded(hdr, 4, &f) == KRAIT__IPC_NEED_MORE, "max length, 4 bytes: wait");
    max_len++;
    hdr[0] = (uint8_t)max_len;
    ok(parse_guarded(hdr, 4, &f) == -1, "length over the limit refused with only 4 bytes");
    hdr[0] = (uint8_t)(max_len - 1);
    for (int type = 0; type < 256; type++) {
        hdr[4] = (uint8_t)type;
        long rc = parse_guarded(hdr, 5, &f);
        int worker = type == KRAIT__IPC_RESPONSE || type == KRAIT__IPC_CHUNK ||
                     type == KRAIT__IPC_END || type == KRAIT__IPC_WS_MESSAGE ||
                     type == KRAIT__IPC_WS_CLOSE || type == KRAIT__IPC_ROUTE_ANSWER ||
                     type == KRAIT__IPC_WS_SUBSCRIBE || type == KRAIT__IPC_WS_UNSUBSCRIBE ||
                     type == KRAIT__IPC_PUBLISH || type == KRAIT__IPC_CACHE_ANSWER;
        ok(rc == (worker ? KRAIT__IPC_NEED_MORE : -1), "type %d with 5 bytes: %ld", type, rc);
    }
    ok(krait__ipc_parse(NULL, 0, &f) == KRAIT__IPC_NEED_MORE, "empty input needs more");
}

static void test_largest_frame(void)
{
    /* A CHUNK frame of exactly KRAIT__IPC_MAX_FRAME bytes parses; its data is all of it. */
    size_t len = KRAIT__IPC_MAX_FRAME;
    uint8_t *buf = calloc(1, len);
    if (!buf)
        abort();
    uint32_t flen = (uint32_t)(len - 4), dlen = (uint32_t)(len - KRAIT__IPC_HEADER - 4);
    for (int i = 0; i < 4; i++) {
        buf[i] = (uint8_t)(flen >> (8 * i));
        buf[KRAIT__IPC_HEADER + i] = (uint8_t)(dlen >> (8 * i));
    }
    buf[4] = KRAIT__IPC_CHUNK;
    krait__ipc_frame f;
    ok(parse_guarded(buf, len, &f) == (long)len, "largest CHUNK frame parses");
    ok(f.type == KRAIT__IPC_CHUNK && f.body.n == dlen, "largest CHUNK data length");
    ok(parse_guarded(buf, len - 1, &f) == KRAIT__IPC_NEED_MORE, "largest frame minus 1 byte");
    free(buf);
}

static void test_many_pairs(void)
{
    /* 1000 headers with distinct contents, iterated back in order. */
    bbuf b = { 0 };
    bb_begin(&b, KRAIT__IPC_RESPONSE, 77);
    bb_u16(&b, 200);
    bb_u8(&b, KRAIT__BODY_INLINE);
    bb_u16(&b, 1000);
    char name[32], value[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "X-%d", i);
        snprintf(value, sizeof value, "%d", i * 7);
        bb_str(&b, name);
        bb_str(&b, i % 10 ? value : "");
    }
    bb_str(&b, "body");
    bb_end(&b);
    guarded g = guarded_copy(b.p, b.n);
    const uint8_t *in = (const uint8_t *)g.data;
    krait__ipc_frame f;
    ok(krait__ipc_parse(in, b.n, &f) == (long)b.n, "1000 headers parse");
    ok(f.nheaders == 1000 && slice_eq(f.body, "body", 4), "count and body");
    const uint8_t *at = f.headers_at;
    int bad = 0;
    for (int i = 0; i < 1000 && f.nheaders == 1000; i++) {
        krait__slice n, v;
        krait__ipc_next_pair(&at, &n, &v);
        snprintf(name, sizeof name, "X-%d", i);
        snprintf(value, sizeof value, "%d", i * 7);
        bad += !slice_eq(n, name, strlen(name));
        bad += !slice_eq(v, i % 10 ? value : "", i % 10 ? strlen(value) : 0);
        bad += !slice_inside(n, in, b.n) || !slice_inside(v, in, b.n);
    }
    ok(bad == 0, "1000 pairs iterated in order (%d bad)", bad);
    ok(at == (const uint8_t *)f.body.p - 4, "iteration ends at the body's length field");
    guarded_free(g);

    /* The count says one pair more than there is: refused, however many pairs precede. */
    b.p[KRAIT__IPC_HEADER + 3] = (uint8_t)(1001 & 0xff);
    b.p[KRAIT__IPC_HEADER + 4] = (uint8_t)(1001 >> 8);
    ok(parse_guarded(b.p, b.n, &f) == -1, "count 1001 with 1000 pairs");
    /* And one fewer: the last pair is read as the body, then bytes are left over. */
    b.p[KRAIT__IPC_HEADER + 3] = (uint8_t)(999 & 0xff);
    b.p[KRAIT__IPC_HEADER + 4] = (uint8_t)(999 >> 8);
    ok(parse_guarded(b.p, b.n, &f) == -1, "count 999 with 1000 pairs");
    free(b.p);
}

static void test_response_edges(void)
{
    bbuf b = { 0 };
    krait__ipc_frame f;
    /* Status bounds. */
    static const struct { uint16_t status; long ok; } st[] = {
        { 99, 0 }, { 100, 1 }, { 200, 1 }, { 999, 1 }, { 1000, 0 }, { 0, 0 }, { 65535, 0 },
    };
    for (size_t i = 0; i < COUNT(st); i++) {
        bb_begin(&b, KRAIT__IPC_RESPONSE, 1);
        bb_u16(&b, st[i].status);
        bb_u8(&b, KRAIT__BODY_INLINE);
        bb_u16(&b, 0);
        bb_str(&b, "");
        bb_end(&b);
        long rc = parse_guarded(b.p, b.n, &f);
        ok(st[i].ok ? rc == (long)b.n && f.status == st[i].status : rc == -1, "status %u: %ld",
           st[i].status, rc);
    }
    /* Body kinds and what each allows in the body string. */
    static const struct { uint8_t kind; const char *body; int ok; } bk[] = {
        { KRAIT__BODY_INLINE, "", 1 },       { KRAIT__BODY_INLINE, "abc", 1 },
        { KRAIT__BODY_FILE, "/srv/x", 1 },   { KRAIT__BODY_FILE, "", 0 },
        { KRAIT__BODY_STREAM, "", 1 },       { KRAIT__BODY_STREAM, "x", 0 },
        { 3, "", 0 },                        { 128, "", 0 },
    };
    for (size_t i = 0; i < COUNT(bk); i++) {
        bb_begin(&b, KRAIT__IPC_RESPONSE, 1);
        bb_u16(&b, 200);
        bb_u8(&b, bk[i].kind);
        bb_u16(&b, 0);
        bb_str(&b, bk[i].body);
        bb_end(&b);
        long rc = parse_guarded(b.p, b.n, &f);
        ok(bk[i].ok ? rc == (long)b.n && f.body_kind == bk[i].kind : rc == -1,
           "body kind %u with \"%s\": %ld", bk[i].kind, bk[i].body, rc);
    }
    /* A string length whose addition to the pointer would wrap: refused, never followed. */
    static const uint32_t lens[] = { 0xffffffffu, 0xfffffff0u, 0x80000000u, 6 };
    for (size_t i = 0; i < COUNT(lens); i++) {
        bb_begin(&b, KRAIT__IPC_CHUNK, 1);
        bb_u32(&b, lens[i]);
        bb_bytes(&b, "hello", 5);
        bb_end(&b);
        ok(parse_guarded(b.p, b.n, &f) == -1, "chunk length %" PRIu32 " past end", lens[i]);
    }
    /* END and CHUNK carry no status, kind or headers. */
    bb_begin(&b, KRAIT__IPC_END, 0xdeadbeefu);
    bb_end(&b);
    ok(parse_guarded(b.p, b.n, &f) == 9 && f.type == KRAIT__IPC_END && f.id == 0xdeadbeefu &&
       f.nheaders == 0 && f.body.n == 0 && f.status == 0, "END frame");
    free(b.p);
}

/* ROUTE_ANSWER: i32 route | u32 allow | str target | str params, nothing more. */
static void test_route_answer(void)
{
    uint8_t f[64] = {0};
    size_t o = 9;
    uint32_t route = 3, allow = 3;  /* GET | POST */
    memcpy(f + o, &route, 4), o += 4;
    memcpy(f + o, &allow, 4), o += 4;
    f[o] = 6, o += 4;
    memcpy(f + o, "page.py", 6), o += 6;
    f[o] = 2, o += 4;
    memcpy(f + o, "\0\0", 2), o += 2;
    uint32_t len = (uint32_t)(o - 4);
    memcpy(f, &len, 4);
    f[4] = KRAIT__IPC_ROUTE_ANSWER;
    f[5] = 42;
    krait__ipc_frame fr;
    ok(parse_guarded(f, o, &fr) == (long)o, "route answer parses (guarded)");
    ok(krait__ipc_parse(f, o, &fr) == (long)o, "route answer parses");
    ok(fr.type == KRAIT__IPC_ROUTE_ANSWER && fr.id == 42 && fr.route == 3 &&
       fr.allow == allow && fr.body.n == 6 && memcmp(fr.body.p, "page.p", 6) == 0 &&
       fr.params.n == 2, "route answer fields");
    for (size_t cut = 0; cut < o; cut++)
        ok(parse_guarded(f, cut, &fr) == KRAIT__IPC_NEED_MORE, "route answer cut at %zu", cut);
    int32_t bad = -2;
    memcpy(f + 9, &bad, 4);
    ok(parse_guarded(f, o, &fr) == -1, "a route below -1 is refused");
    memcpy(f + 9, &route, 4);
    len++;
    memcpy(f, &len, 4);
    ok(parse_guarded(f, o + 1, &fr) == -1, "a trailing byte is refused");
}

/* CACHE_ANSWER: u32 flags, nothing more; only the combinations the cache lists can give
 * (NO_STORE alone, PRIVATE or PUBLIC with or without LONG) are taken. */
static void test_cache_answer(void)
{
    uint8_t f[16] = {0};
    uint32_t len = 9, flags;
    memcpy(f, &len, 4);
    f[4] = KRAIT__IPC_CACHE_ANSWER;
    f[5] = 7;
    krait__ipc_frame fr;
    int valid = 0;
    for (flags = 0; flags < 64; flags++) {
        memcpy(f + 9, &flags, 4);
        int want = flags == 1 || flags == 0 || flags == 2 || flags == 4 || flags == 8 ||
                   flags == 10 || flags == 12;
        long rc = parse_guarded(f, 13, &fr);
        ok(rc == (want ? 13 : -1), "cache flags %u: %ld", flags, rc);
        if (want) {
            valid++;
            ok(fr.type == KRAIT__IPC_CACHE_ANSWER && fr.id == 7 && fr.allow == flags,
               "cache answer fields (%u)", flags);
        }
    }
    ok(valid == 7, "seven valid flag sets");
    flags = 0x80000004u;
    memcpy(f + 9, &flags, 4);
    ok(parse_guarded(f, 13, &fr) == -1, "a high bit is refused");
    flags = 4;
    memcpy(f + 9, &flags, 4);
    for (size_t cut = 0; cut < 13; cut++)
        ok(parse_guarded(f, cut, &fr) == KRAIT__IPC_NEED_MORE, "cache answer cut at %zu", cut);
    len = 8;
    memcpy(f, &len, 4);
    ok(parse_guarded(f, 12, &fr) == -1, "three bytes of flags are refused");
    len = 10;
    memcpy(f, &len, 4);
    ok(parse_guarded(f, 14, &fr) == -1, "a trailing byte is refused");
}

int main(void)
{
    test_route_answer();
    test_cache_answer();
    test_request_vectors();
    test_request_encoding_details();
    test_request_limits();
    test_response_vectors();
    test_stream_vectors();
    test_malformed_vectors();
    test_early_rejection();
    test_largest_frame();
    test_many_pairs();
    test_response_edges();
    return done();
}
