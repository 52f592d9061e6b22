/* JSON text of a reply, written in one pass over the tree.
 *
 * The same text jansson's json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15)) writes
 * (keys in insertion order, strings escaped alike, reals with a '.' or an exponent), except that a real
 * holding a float32 exactly (hyperparameters, probabilities, metrics of the float kernels) prints as the
 * shortest decimal that reads back as that float: 0.001, not 0.0010000000474974513. Doing that while
 * writing means the caller's tree, which may be shared, is never copied or changed.
 */
#ifndef CLAD_DAEMON_JSON_TEXT_H
#define CLAD_DAEMON_JSON_TEXT_H

#include <jansson.h>
#include <stddef.h>

/* The text of j followed by '\n' (malloc'd, NUL-terminated, its length without the NUL in *len), or NULL
 * when out of memory. */
char *json_text_line(const json_t *j, size_t *len);

/* The fewest significant digits (1-9) that read back as f. */
int json_text_float_digits(float f);

#endif
