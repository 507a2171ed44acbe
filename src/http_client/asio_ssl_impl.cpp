// Separate compilation of Asio's SSL support (used by the native client only).
#include <boost/asio/ssl/impl/src.hpp>
