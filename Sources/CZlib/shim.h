#ifndef OPAL_CZLIB_SHIM_H
#define OPAL_CZLIB_SHIM_H
#include <zlib.h>
#endif
