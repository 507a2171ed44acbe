# CONDUIT_SANITIZE="address,undefined" adds the sanitizer flags to every target (g++ only; see DESIGN §6).
if(CONDUIT_SANITIZE)
  add_compile_options(-fsanitize=${CONDUIT_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${CONDUIT_SANITIZE})
  set(CONDUIT_USE_JEMALLOC OFF CACHE BOOL "" FORCE)
endif()
