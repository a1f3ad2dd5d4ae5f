#ifndef OPAL_CBLAS_SHIM_H
#define OPAL_CBLAS_SHIM_H
// Debian's libopenblas-dev installs cblas.h (with openblas_set_num_threads) through the alternatives system.
#include <cblas.h>
#endif
