/* Hugging Face model folder: config.json plus model.safetensors, or
 * model.safetensors.index.json whose weight_map names the shard of every tensor. */
#include "sqz/io.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define HF_MAX_JSON (64u * 1024u * 1024u) /* config.json and index files are small */

static int add_shard(sqz_hf *h, const char *file, sqz_err *err) {
    char *p = sqz_path_join(h->dir, file);
    if (!p) return sqz_fail(err, "%s: out of memory", h->dir);
    sqz_st_file *s = realloc(h->shards, (size_t)(h->n_shards + 1) * sizeof *s);
    if (!s) {
        free(p);
        return sqz_fail(err, "%s: out of memory", h->dir);
    }
    h->shards = s;
    int rc = sqz_st_open(&h->shards[h->n_shards], p, err);
    free(p);
    if (rc != SQZ_OK) return SQZ_ERR;
    h->n_shards++;
    return SQZ_OK;
}

/* Shard names come from a file: keep them inside the folder. */
static int shard_name_ok(const char *s) {
    return s[0] != 0 && s[0] != '/' && strstr(s, "..") == NULL && strchr(s, '/') == NULL;
}

static int open_index(sqz_hf *h, const char *index_path, sqz_err *err) {
    char *text = NULL;
    size_t len = 0;
    if (sqz_read_file(index_path, HF_MAX_JSON, &text, &len, err) != SQZ_OK) return SQZ_ERR;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return sqz_fail(err, "%s: not valid JSON", index_path);
    int rc = SQZ_ERR;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    char **names = NULL; /* shard file names, in order of first use; parallel to h->shards */
    if (!cJSON_IsObject(wm)) {
        sqz_fail(err, "%s: weight_map: missing or not an object", index_path);
        goto done;
    }
    int n_entries = cJSON_GetArraySize(wm);
    names = calloc((size_t)(n_entries > 0 ? n_entries : 1), sizeof *names);
    if (!names) {
        sqz_fail(err, "%s: out of memory", index_path);
        goto done;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            sqz_fail(err, "%s: weight_map: tensor '%s': expected a file name in the folder", index_path,
                     e->string ? e->string : "?");
            goto done;
        }
        int k = 0;
        while (k < h->n_shards && strcmp(names[k], e->valuestring) != 0) k++;
        if (k == h->n_shards) {
            names[k] = e->valuestring;
            if (add_shard(h, e->valuestring, err) != SQZ_OK) {
                sqz_fail_prefix(err, "%s: weight_map shard", index_path);
                goto done;
            }
        }
        if (!sqz_st_find(&h->shards[k], e->string)) {
            sqz_fail(err, "%s: weight_map: tensor '%s' is not in its shard %s", index_path, e->string,
                     e->valuestring);
            goto done;
        }
    }
    if (h->n_shards == 0) {
        sqz_fail(err, "%s: weight_map: empty (expected at least one tensor)", index_path);
        goto done;
    }
    rc = SQZ_OK;
done:
    free(names);
    cJSON_Delete(root);
    return rc;
}

int sqz_hf_open(sqz_hf *h, const char *dir, sqz_err *err) {
    memset(h, 0, sizeof *h);
    if (!sqz_path_is_dir(dir)) return sqz_fail(err, "%s: not a directory (expected a Hugging Face model folder)", dir);
    h->dir = strdup(dir);
    char *cfg = sqz_path_join(dir, "config.json");
    char *single = sqz_path_join(dir, "model.safetensors");
    char *index = sqz_path_join(dir, "model.safetensors.index.json");
    int rc = SQZ_ERR;
    if (!h->dir || !cfg || !single || !index) {
        sqz_fail(err, "%s: out of memory", dir);
        goto done;
    }
    if (!sqz_path_exists(cfg)) {
        sqz_fail(err, "%s: missing config.json (expected %s)", dir, cfg);
        goto done;
    }
    if (sqz_read_file(cfg, HF_MAX_JSON, &h->config_json, &h->config_len, err) != SQZ_OK) goto done;
    if (sqz_path_exists(index)) {
        if (open_index(h, index, err) != SQZ_OK) goto done;
    } else if (sqz_path_exists(single)) {
        if (add_shard(h, "model.safetensors", err) != SQZ_OK) goto done;
    } else {
        sqz_fail(err, "%s: no weights (expected model.safetensors or model.safetensors.index.json)", dir);
        goto done;
    }
    rc = SQZ_OK;
done:
    free(cfg);
    free(single);
    free(index);
    if (rc != SQZ_OK) sqz_hf_close(h);
    return rc;
}

void sqz_hf_close(sqz_hf *h) {
    if (!h) return;
    for (int i = 0; i < h->n_shards; i++) sqz_st_close(&h->shards[i]);
    free(h->shards);
    free(h->config_json);
    free(h->dir);
    memset(h, 0, sizeof *h);
}

const sqz_tensor *sqz_hf_find(const sqz_hf *h, const char *name) {
    for (int i = 0; i < h->n_shards; i++) {
        const sqz_tensor *t = sqz_st_find(&h->shards[i], name);
        if (t) return t;
    }
    return NULL;
}
