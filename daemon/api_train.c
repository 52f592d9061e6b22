#include "daemon/api.h"
const route api_train_routes[] = {ROUTE_END};
