# conduit_set_warnings(<target>): the project's warning set (third-party headers come in as SYSTEM).
function(conduit_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
    -Woverloaded-virtual -Wno-missing-field-initializers)
  if(CONDUIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
