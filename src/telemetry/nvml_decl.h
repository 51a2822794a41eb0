/* Private: our declarations of the NVML types and constants thermoe uses (layouts as in the
 * public nvml.h, which is not needed to build), shared by the dlopen'ed source and by the fake
 * libnvidia-ml the tests build, so both speak one ABI. */
#ifndef THERMOE_NVML_DECL_H
#define THERMOE_NVML_DECL_H

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_GPU_IS_LOST = 15,
};
typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    int siVal;
    unsigned short usVal;
} nvmlValue_t;
typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    int valueType; /* nvmlValueType_t */
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;
enum { VT_DOUBLE, VT_UINT, VT_ULONG, VT_ULLONG, VT_SLLONG, VT_SINT, VT_USHORT };
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
    unsigned int reserved[8]; /* room for the v3 tail */
} nvmlPciInfo_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;
typedef enum { NVML_FEATURE_DISABLED = 0, NVML_FEATURE_ENABLED = 1 } nvmlEnableState_t;
#define NVML_FI_DEV_MEMORY_TEMP 82
#define NVML_FI_DEV_POWER_INSTANT 186
#define NVML_TEMPERATURE_GPU 0
#define NVML_TEMP_THRESHOLD_SHUTDOWN 0
#define NVML_TEMP_THRESHOLD_SLOWDOWN 1
#define NVML_CLOCK_SM 1
#define NVML_CLOCK_MEM 2
#define NVML_PCIE_TX 0
#define NVML_PCIE_RX 1

#endif
