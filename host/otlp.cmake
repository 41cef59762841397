# pitlane::otlp — the OpenTelemetry exporter (OTLP/HTTP protobuf and OTLP/gRPC) over a Host.
# It alone links the OTLP messages (pitlane::otlp_proto), zlib (gzip request bodies) and OpenSSL
# (https:// for OTLP/HTTP; gRPC brings its own TLS); the metric spec language comes from
# pitlane::prometheus (MetricSpec).
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED)  # https:// for OTLP/HTTP (src/otlp_tls.cc)
add_library(pitlane_otlp src/otlp_exporter.cc src/otlp_transport.cc src/otlp_tls.cc)
add_library(pitlane::otlp ALIAS pitlane_otlp)
target_include_directories(pitlane_otlp PUBLIC
  $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(pitlane_otlp PUBLIC pitlane_host pitlane_prometheus
                      PRIVATE pitlane_otlp_proto ZLIB::ZLIB OpenSSL::SSL Threads::Threads)
